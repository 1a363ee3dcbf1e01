"""The cluster path on one machine: ``local_services`` (the servers, also used by the tests) and
``run`` (the whole pipeline through ``ray job submit``)."""
