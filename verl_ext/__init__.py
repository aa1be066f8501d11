"""ViSurf for verl: importing this package registers the "visurf" advantage estimator, policy loss
(and reward manager) with verl, see `verl_ext.registry`. No other side effects."""

from verl_ext.registry import register_all

register_all()
