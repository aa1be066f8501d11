"""A reward that varies even for a random tiny model (tests only): the project's task score plus
a length term, so GRPO groups are not all-equal and the gradient is non-zero."""

from verl_ext.rewards import compute_score as task_score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    result = task_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    return {**result, "score": result["score"] + (len(solution_str) % 7) / 7.0}
