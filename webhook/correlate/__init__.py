"""`kubefence correlate`, the pure core: audit events and decisions in, one joined `Report` out.

Readers (`audit_reader`, `decision_reader`) turn lines into records, `join.Correlator` joins them
and `tally.Tally` counts what it finds; `correlation` runs the whole over named line streams.
The package owns the renderings of its `Report` too: `render_json`, `render_text`, `render_html`
and its `render_svg` timeline, sharing `render_cells` so a value reads the same in every format.
No file, clock or terminal is touched in this package: the command opens the files and writes
the rendering.
"""
