"""The micro base model's reasoning: think blocks about the image, written from the synthetic scene.

An instruction-tuned VLM asked to think writes what it sees and how it picks the target, in varied
wording. The base model of the micro reproduction learns the same from these texts: for a grid row
(``data_prep.synthetic``, tasks ``grid_source`` / ``grid_target``) the scene is read off the image
(``synthetic.grid_scene``: which object types are present), the queried type is resolved against it
(``resolve_target``; a relational query "the shape right of the green circle" names the named
object's neighbour), and one of ``THINK_TEMPLATES`` says which objects are there, which one is the
target and where it is (row of its shape, column of its colour); a relational query's think first
places the named object, then derives its neighbour (``RELATION_TEMPLATE``). Each template is a different wording of the same content.

``think_text(scene, question, k)`` is template ``k``'s think for a scene and question;
``row_thinks(row)`` all of them for a data row (used by the base's training and by the evaluation's
log-likelihood of the correct answer in the base's style).
"""

from __future__ import annotations

import io

from data_prep.synthetic import GRID_RELATIONS, LAYOUT_COLORS, LAYOUT_SHAPES, grid_neighbour, grid_scene

# {objects}: the present types in reading order ("red circle, blue square, green triangle"); {n}: how
# many; {target}: the resolved type; {pos}: its cell, "row R col C" (R = its shape's row, C = its
# colour's column, from 1). Short on purpose: every rollout token costs CPU time.
THINK_TEMPLATES = (
    "I see {objects}. The {target} is {pos}.",
    "Objects: {objects}. Target {target}, {pos}.",
    "{n} shapes: {objects}; I pick the {target}, {pos}.",
    "In the image: {objects}. So the {target}, {pos}.",
)
# when the queried object is not in the image (part c): the template's opening, then the absence
ABSENT_TEMPLATE = "{opening} There is no {query}."
# a relational query (part d): the opening, where the named object is, then the derivation; the
# unreasoned variant stops at the named object (the base's typical mistake: it answers that object)
RELATION_TEMPLATE = "{opening} The {ref} is {ref_pos}; {relation} it is {pos}: the {target}."
UNREASONED_TEMPLATE = "{opening} The {ref} is {ref_pos}, so the {ref}."


def parse_query(question: str) -> tuple[str | None, str | None, str | None]:
    """(colour, shape, relation) of a grid question: "the red circle" -> (red, circle, None);
    "the shape right of the red circle" -> (red, circle, "right of")."""
    relation = next((r for r in GRID_RELATIONS if question.startswith(f"the shape {r} the ")), None)
    words = (question[len(f"the shape {relation} "):] if relation else question).split()
    if len(words) != 3 or words[0] != "the" or words[1] not in LAYOUT_COLORS or words[2] not in LAYOUT_SHAPES:
        raise ValueError(f"not a grid question: {question!r}")
    return words[1], words[2], relation


def resolve_target(question: str, scene: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The type the question asks for if it is in ``scene`` (a relation: the named object's neighbour,
    ``synthetic.grid_neighbour``), else None."""
    colour, shape, relation = parse_query(question)
    target = (colour, shape) if relation is None else grid_neighbour((colour, shape), relation)
    return target if target in scene else None


def _objects(scene: list[tuple[str, str]]) -> str:
    return ", ".join(f"{c} {k}" for c, k in scene)


def cell_words(target: tuple[str, str]) -> str:
    """"row R col C" of a type's home cell (1-based: row of its shape, column of its colour)."""
    return f"row {LAYOUT_SHAPES.index(target[1]) + 1} col {LAYOUT_COLORS.index(target[0]) + 1}"


def opening(scene: list[tuple[str, str]], k: int) -> str:
    """Template ``k``'s first sentence (what the image shows)."""
    return (THINK_TEMPLATES[k].split("{objects}")[0] + "{objects}.").format(objects=_objects(scene), n=len(scene))


def think_text(scene: list[tuple[str, str]], question: str, k: int, reasoned: bool = True) -> str:
    """Template ``k``'s think for ``scene`` (reading order) and ``question``; for a relational question
    with ``reasoned=False``, the think that stops at the named object (``UNREASONED_TEMPLATE``)."""
    colour, shape, relation = parse_query(question)
    target = resolve_target(question, scene)
    name = lambda t: f"{t[0]} {t[1]}"  # noqa: E731
    if relation is not None:
        ref = (colour, shape)
        if not reasoned or target is None:
            return UNREASONED_TEMPLATE.format(opening=opening(scene, k), ref=name(ref), ref_pos=cell_words(ref))
        return RELATION_TEMPLATE.format(opening=opening(scene, k), ref=name(ref), ref_pos=cell_words(ref),
                                        relation=relation, target=name(target), pos=cell_words(target))
    if target is None:
        return ABSENT_TEMPLATE.format(opening=opening(scene, k), query=question[len("the "):])
    return THINK_TEMPLATES[k].format(objects=_objects(scene), n=len(scene), target=name(target),
                                     pos=cell_words(target))


def row_scene(row: dict) -> list[tuple[str, str]]:
    """``grid_scene`` of a data_prep row's image."""
    from PIL import Image

    image = row["images"][0]
    return grid_scene(Image.open(io.BytesIO(image["bytes"] if isinstance(image, dict) else image)))


def row_thinks(row: dict, reasoned: bool = True) -> list[str]:
    """Every template's think for a data_prep grid row (``reasoned``: as ``think_text``)."""
    scene, question = row_scene(row), row["extra_info"]["question"]
    return [think_text(scene, question, k, reasoned) for k in range(len(THINK_TEMPLATES))]
