# Real corpus: human-written web / code / math text mixed by weight, with a held-out split.


rule real_corpus:
    input:
        unpack(stage_input("real_corpus")),
    output:
        stage_output("real_corpus"),
    params:
        command=stage_command("real_corpus"),
    log:
        stage_log("real_corpus"),
    threads: stage_threads("real_corpus")
    resources:
        **stage_resources("real_corpus"),
    conda:
        stage_conda("real_corpus")
    shell:
        "{params.command}"
