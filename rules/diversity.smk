# Diversity: the LLM Cluster-agent and the baseline metrics per synthetic experiment, then one table.


rule diversity:
    input:
        unpack(stage_input("diversity")),
    output:
        stage_output("diversity"),
    params:
        command=stage_command("diversity"),
    log:
        stage_log("diversity"),
    threads: stage_threads("diversity")
    resources:
        **stage_resources("diversity"),
    conda:
        stage_conda("diversity")
    shell:
        "{params.command}"


rule diversity_summary:
    input:
        unpack(stage_input("diversity_summary")),
    output:
        stage_output("diversity_summary"),
    params:
        command=stage_command("diversity_summary"),
    log:
        stage_log("diversity_summary"),
    threads: stage_threads("diversity_summary")
    resources:
        **stage_resources("diversity_summary"),
    conda:
        stage_conda("diversity_summary")
    shell:
        "{params.command}"
