"""`elmo register` and MLflow: runs, metrics, the logged model (`tracking.py`), the logged model's
own code (`pyfunc_model.py`), and registration with the champion gate (`register.py`)."""
