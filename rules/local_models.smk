# Local models: the tokenizer and tiny random Llama models the CPU default runs on.


rule local_models:
    input:
        unpack(stage_input("local_models")),
    output:
        stage_output("local_models"),
    params:
        command=stage_command("local_models"),
    log:
        stage_log("local_models"),
    threads: stage_threads("local_models")
    resources:
        **stage_resources("local_models"),
    conda:
        stage_conda("local_models")
    shell:
        "{params.command}"
