# Topics: normalise and deduplicate the topic hierarchy, then sample T topics per experiment.


rule topics:
    input:
        unpack(stage_input("topics")),
    output:
        stage_output("topics"),
    log:
        stage_log("topics"),
    conda:
        "../envs/cpu.yaml"
    shell:
        stage_shell("topics")


rule sample_topics:
    input:
        unpack(stage_input("sample_topics")),
    output:
        stage_output("sample_topics"),
    log:
        stage_log("sample_topics"),
    conda:
        "../envs/cpu.yaml"
    shell:
        stage_shell("sample_topics")
