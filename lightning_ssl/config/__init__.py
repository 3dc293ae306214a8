"""What a run is made of, below both the command line and the sweeps: the names of the methods and
datasets (:mod:`.registry`), the ``lssl fit`` parser (:mod:`.cli`) and the run-time callbacks it
adds (:mod:`.callbacks`). ``lightning_ssl.cli`` and ``lightning_ssl.sweep`` import from here, never
the other way round (docs/design.md §2)."""
