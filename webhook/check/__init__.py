"""`kubefence check` (pure): plain manifests read with their lines, judged as the webhook would
judge the requests they lead to, and the report rendered as text, JSON, SARIF or JUnit XML."""
