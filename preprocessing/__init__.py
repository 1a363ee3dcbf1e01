"""Corpus shards -> vocabulary + Parquet of word ids and tokens on Ray Data (`elmo preprocess`);
character ids are computed from the tokens when read (`preprocessing.encode.char_ids_of`)."""
