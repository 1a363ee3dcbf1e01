"""What a Parquet file's metadata says about its size."""

from __future__ import annotations


def row_group_and_footer(metadata) -> int:
    """Bytes on disk of a Parquet file's largest row group plus its footer: how far past the
    size target a file may go."""
    return metadata.serialized_size + max(
        sum(group.column(j).total_compressed_size for j in range(group.num_columns))
        for group in (metadata.row_group(i) for i in range(metadata.num_row_groups)))
