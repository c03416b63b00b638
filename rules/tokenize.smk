# Tokenize every corpus into Megatron .bin/.idx, then mix real and synthetic tokens per experiment.


rule tokenize_real:
    input:
        unpack(stage_input("tokenize_real")),
    output:
        stage_output("tokenize_real"),
    params:
        command=stage_command("tokenize_real"),
    log:
        stage_log("tokenize_real"),
    threads: stage_threads("tokenize_real")
    resources:
        **stage_resources("tokenize_real"),
    conda:
        stage_conda("tokenize_real")
    shell:
        "{params.command}"


rule tokenize_synthetic:
    input:
        unpack(stage_input("tokenize_synthetic")),
    output:
        stage_output("tokenize_synthetic"),
    params:
        command=stage_command("tokenize_synthetic"),
    log:
        stage_log("tokenize_synthetic"),
    threads: stage_threads("tokenize_synthetic")
    resources:
        **stage_resources("tokenize_synthetic"),
    conda:
        stage_conda("tokenize_synthetic")
    shell:
        "{params.command}"


rule mix:
    input:
        unpack(stage_input("mix")),
    output:
        stage_output("mix"),
    params:
        command=stage_command("mix"),
    log:
        stage_log("mix"),
    threads: stage_threads("mix")
    resources:
        **stage_resources("mix"),
    conda:
        stage_conda("mix")
    shell:
        "{params.command}"
