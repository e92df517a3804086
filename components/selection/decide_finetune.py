"""The decide-finetune step as a KFP component: what the fine-tuning branch should do."""

from kfp import dsl

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def decide_finetune(mode: str, meets_target: bool, finetune_data: str,
                    drifted: bool = False) -> str:
    """Say what the fine-tuning branch should do: ``skip``, ``same-data`` or ``other-data``.

    Args:
        mode: The pipeline's ``finetune`` setting: ``auto`` (only when the target is
            missed or the data drifted), ``always`` or ``never``.
        meets_target: Whether the trained model reached the accuracy target (evaluate's
            ``meets_target``).
        finetune_data: The other data set to fine-tune on; empty: the training data.
        drifted: Whether the data drifted significantly from the champion's (check-data's
            ``drifted``).

    Returns:
        Output: ``skip`` (no fine-tuning), ``same-data`` (fine-tune on the training data) or
            ``other-data`` (fine-tune on ``finetune_data``).
    """
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.selection.core import OTHER_DATA, SAME_DATA, SKIP, finetune_plan

    plan = finetune_plan(mode, meets_target, finetune_data, drifted)
    print(f"finetune={mode}, meets target={meets_target}, drifted={drifted} -> {plan}")
    report_result("decide-finetune", {SKIP: "no fine-tuning",
                                      SAME_DATA: "fine-tune on the same data",
                                      OTHER_DATA: "fine-tune on --finetune-data"}[plan])
    return plan
