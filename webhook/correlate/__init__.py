"""`kubefence correlate`, the pure core: audit events and decisions in, one joined `Report` out.

Readers (`audit_reader`, `decision_reader`) turn lines into records, `join.Correlator` joins them
and `tally.Tally` counts what it finds; `correlation` runs the whole over named line streams.
No file, clock or terminal is touched in this package: the command opens the files.
"""
