"""ViSurf for verl: importing this package registers the "visurf" advantage estimator, policy loss
and reward manager with verl (now if verl is imported, else as soon as it is; see
`verl_ext.registry`). No other side effects: `verl_ext.constants` stays cheap to import."""

from verl_ext.registry import register_on_verl_import

register_on_verl_import()
