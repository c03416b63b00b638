# Tables in the paper's layout, figures, correlations with the diversity scores, and the report.


rule report:
    input:
        unpack(stage_input("report")),
    output:
        report(
            stage_output("report"),
            patterns=["figures/{name}.png"],
            caption="../workflow_scripts/report/captions/figure1.rst",
            category="Figures",
        ),
    params:
        command=stage_command("report"),
    log:
        stage_log("report"),
    threads: stage_threads("report")
    resources:
        **stage_resources("report"),
    conda:
        stage_conda("report")
    shell:
        "{params.command}"
