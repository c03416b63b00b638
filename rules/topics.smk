# Topics: extract topics from real pages (optional), normalise and deduplicate the hierarchy, then sample
# T topics per experiment.


rule topic_extraction:
    input:
        unpack(stage_input("topic_extraction")),
    output:
        stage_output("topic_extraction"),
    params:
        command=stage_command("topic_extraction"),
    log:
        stage_log("topic_extraction"),
    threads: stage_threads("topic_extraction")
    resources:
        **stage_resources("topic_extraction"),
    conda:
        stage_conda("topic_extraction")
    shell:
        "{params.command}"


rule topics:
    input:
        unpack(stage_input("topics")),
    output:
        stage_output("topics"),
    params:
        command=stage_command("topics"),
    log:
        stage_log("topics"),
    threads: stage_threads("topics")
    resources:
        **stage_resources("topics"),
    conda:
        stage_conda("topics")
    shell:
        "{params.command}"


rule sample_topics:
    input:
        unpack(stage_input("sample_topics")),
    output:
        stage_output("sample_topics"),
    params:
        command=stage_command("sample_topics"),
    log:
        stage_log("sample_topics"),
    threads: stage_threads("sample_topics")
    resources:
        **stage_resources("sample_topics"),
    conda:
        stage_conda("sample_topics")
    shell:
        "{params.command}"
