# Supervised fine-tuning of every converted pre-trained model.


rule sft:
    input:
        unpack(stage_input("sft")),
    output:
        stage_output("sft"),
    params:
        command=stage_command("sft"),
    log:
        stage_log("sft"),
    threads: stage_threads("sft")
    resources:
        **stage_resources("sft"),
    conda:
        stage_conda("sft")
    shell:
        "{params.command}"
