# Pre-train the student model with Megatron-core on each experiment's mix (torchrun when resources.nproc > 1).


rule pretrain:
    input:
        unpack(stage_input("pretrain")),
    output:
        stage_output("pretrain"),
    params:
        command=stage_command("pretrain"),
    log:
        stage_log("pretrain"),
    threads: stage_threads("pretrain")
    resources:
        **stage_resources("pretrain"),
    conda:
        stage_conda("pretrain")
    shell:
        "{params.command}"
