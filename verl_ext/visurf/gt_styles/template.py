"""GT style ``template`` (the paper's setting, docs/METHOD.md §1.2 / §3.1): the GT member answers with the
rendered GT text alone — ``visurf.gt_template`` around the aligned label — every token trained."""

from __future__ import annotations

from collections.abc import Iterator

from verl_ext.visurf.gt_styles import GTRequest, GTResponse, template_response


def build(request: GTRequest) -> Iterator[GTResponse]:
    """One proposal: the rendered GT text, no context."""
    yield template_response(request)
