# Local models: the tokenizer and tiny random Llama models the CPU default runs on.


rule local_models:
    input:
        unpack(stage_input("local_models")),
    output:
        stage_output("local_models"),
    log:
        stage_log("local_models"),
    conda:
        "../envs/cpu.yaml"
    shell:
        stage_shell("local_models")
