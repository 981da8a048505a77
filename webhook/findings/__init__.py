"""`kubefence scan`, the pure core: cluster facts and settings in, findings and renderings out.

`judge.scan` judges every namespace as the webhook would (`usual_writers` is the table its
audit-scope preflight runs through) into a frozen `model.ScanReport`, and decides what the cluster
re-creates with the webhook's own `decide` under the chart's enforce modes (`recreation`,
`enforce_modes`: the gate); `render` prints it as a
table, as JSON or as the `--fix` manifests. No cluster, file or terminal is touched in this
package: `commands/scan.py` reads the cluster or the `--state` folder and writes the output.
"""
