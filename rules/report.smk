# Tables in the paper's layout, figures, correlations with the diversity scores, and the report.


rule report:
    input:
        unpack(stage_input("report")),
    output:
        stage_output("report"),
    params:
        command=stage_command("report"),
    log:
        stage_log("report"),
    threads: stage_threads("report")
    resources:
        **stage_resources("report"),
    conda:
        "../envs/cpu.yaml"
    shell:
        "{params.command}"
