# Convert each final Megatron checkpoint into a Hugging Face LlamaForCausalLM folder.


rule convert:
    input:
        unpack(stage_input("convert")),
    output:
        stage_output("convert"),
    params:
        command=stage_command("convert"),
    log:
        stage_log("convert"),
    threads: stage_threads("convert")
    resources:
        **stage_resources("convert"),
    conda:
        stage_conda("convert")
    shell:
        "{params.command}"
