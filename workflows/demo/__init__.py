"""`elmo demo` (`demo.py`, also ``python -m workflows.demo``) and its pictures (`plots.py`)."""
