# lm-eval: build the local tasks, then evaluate every pre-trained and every fine-tuned model.


rule eval_tasks:
    input:
        unpack(stage_input("eval_tasks")),
    output:
        stage_output("eval_tasks"),
    params:
        command=stage_command("eval_tasks"),
    log:
        stage_log("eval_tasks"),
    threads: stage_threads("eval_tasks")
    resources:
        **stage_resources("eval_tasks"),
    conda:
        stage_conda("eval_tasks")
    shell:
        "{params.command}"


rule evaluate_pt:
    input:
        unpack(stage_input("evaluate_pt")),
    output:
        stage_output("evaluate_pt"),
    params:
        command=stage_command("evaluate_pt"),
    log:
        stage_log("evaluate_pt"),
    threads: stage_threads("evaluate_pt")
    resources:
        **stage_resources("evaluate_pt"),
    conda:
        stage_conda("evaluate_pt")
    shell:
        "{params.command}"


rule evaluate_sft:
    input:
        unpack(stage_input("evaluate_sft")),
    output:
        stage_output("evaluate_sft"),
    params:
        command=stage_command("evaluate_sft"),
    log:
        stage_log("evaluate_sft"),
    threads: stage_threads("evaluate_sft")
    resources:
        **stage_resources("evaluate_sft"),
    conda:
        stage_conda("evaluate_sft")
    shell:
        "{params.command}"
