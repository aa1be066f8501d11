"""ViSurf for verl: what verl lacks (``visurf/``: advantage, policy loss, group step, GT injection;
``rewards/``; ``reward_manager``; ``metrics``; ``constants``; ``cpu/``).

Importing the package has no side effects. ``import verl_ext.registry`` registers the "visurf"
advantage estimator and policy loss with verl; the recipe has verl import it in every ray worker
through ``VERL_USE_EXTERNAL_MODULES`` (see ``verl_ext.registry``).
"""
