"""The modes enforce judges under, what the chart's `mode: enforce` renders: scan's gate judges
re-creations under them, and `kubefence check` manifests (unless `--as-configured`).

`charts/kubefence/templates/_helpers.tpl` (`kubefence.config`) maps the chart's `mode` onto each
rule's mode knob: under `mode: enforce` it renders `enforce` for `defaultDeny.mode`,
`defaultDeny.allowAll`, `hostNetwork.mode`, `hostPID`, `hostPIDPtrace`, `hostPath`, `privileged`,
`capabilities`, `probeHost` and `auditScope.mode`, and `warn` for `defaultDeny.allowAllSelected`,
`hostNetwork.hostPort` and `hostNetwork.otherHostPaths`; it renders neither
`defaultDeny.allowNearlyAll` nor `namespaceLabels.mode` (they keep kubefence's defaults, warn).
`CHART_ENFORCE` is that table. `enforce_settings` raises each configured global mode to it,
never lowers one (a knob set to `enforce` stays enforce), and leaves a knob that is `off` off and
every namespace override as it is: those come from the chart's `config:`, which the chart merges
over what `mode` renders. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from webhook.settings import Mode, Settings

# The knobs `kubefence.config` sets to `$m.enforce` and to `$m.warn`, as _helpers.tpl lists them.
_RENDERED_ENFORCE = (
    *("defaultDeny", "allowAll", "hostNetwork", "hostPID", "hostPIDPtrace", "hostPath"),
    *("privileged", "capabilities", "probeHost", "auditScope"),
)
_RENDERED_WARN = ("allowAllSelected", "hostPort", "otherHostPaths")
CHART_ENFORCE: Mapping[str, Mode] = {
    **dict.fromkeys(_RENDERED_ENFORCE, Mode.ENFORCE),
    **dict.fromkeys(_RENDERED_WARN, Mode.WARN),
}
_STRENGTH = {Mode.OFF: 0, Mode.AUDIT: 1, Mode.WARN: 2, Mode.ENFORCE: 3}


def enforce_settings(settings: Settings) -> Settings:
    """`settings` as after `helm upgrade --set mode=enforce`: each global mode the chart's
    `mode` renders raised to `CHART_ENFORCE`, unless it is off; overrides untouched."""
    modes = dict(settings.modes)
    for key, chart in CHART_ENFORCE.items():
        configured = modes[key]
        if configured is not Mode.OFF and _STRENGTH[configured] < _STRENGTH[chart]:
            modes[key] = chart
    return replace(settings, modes=modes)


def enforced_keys(settings: Settings) -> tuple[str, ...]:
    """The mode knobs that enforce in `settings` (before namespace overrides), in table order."""
    return tuple(key for key, mode in settings.modes.items() if mode is Mode.ENFORCE)
