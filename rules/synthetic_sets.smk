# Synthetic sets not generated here: external corpora (Cosmopedia) and sets drawn from several generators.


rule external_synthetic:
    input:
        unpack(stage_input("external_synthetic")),
    output:
        stage_output("external_synthetic"),
    params:
        command=stage_command("external_synthetic"),
    log:
        stage_log("external_synthetic"),
    threads: stage_threads("external_synthetic")
    resources:
        **stage_resources("external_synthetic"),
    conda:
        stage_conda("external_synthetic")
    shell:
        "{params.command}"


rule mixed_synthetic:
    input:
        unpack(stage_input("mixed_synthetic")),
    output:
        stage_output("mixed_synthetic"),
    params:
        command=stage_command("mixed_synthetic"),
    log:
        stage_log("mixed_synthetic"),
    threads: stage_threads("mixed_synthetic")
    resources:
        **stage_resources("mixed_synthetic"),
    conda:
        stage_conda("mixed_synthetic")
    shell:
        "{params.command}"
