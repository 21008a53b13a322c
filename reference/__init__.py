"""Reference plugins built with the kit: real drivers a person would install,
and the examples the documentation points to.

* ``reference.localvol`` -- ``LocalVolumes``, one directory per volume on the host.
"""
