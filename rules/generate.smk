# Generate: T topics x G generations per synthetic experiment, through the shared request cache.


rule generate:
    input:
        unpack(stage_input("generate")),
    output:
        stage_output("generate"),
    params:
        command=stage_command("generate"),
    log:
        stage_log("generate"),
    threads: stage_threads("generate")
    resources:
        **stage_resources("generate"),
    conda:
        stage_conda("generate")
    shell:
        "{params.command}"
