# The pipeline's Snakemake front-end. All logic lives in the workflow_scripts package; the job
# definitions (commands, inputs, params, outputs) come from workflow_scripts/pipeline.py, the same
# source dvc.yaml is generated from. Run: snakemake --cores N  (paper scale: --configfile configs/paper.yaml)

from snakemake.utils import min_version

min_version("9.0")


# No `configfile:` directive: the rules never read Snakemake's `config` (rules/common.smk loads and validates the
# file itself, params.yaml or the --configfile given), so Snakemake need not parse it a second time on every start.


report: "workflow_scripts/report/captions/workflow.rst"


include: "rules/common.smk"
include: "rules/topics.smk"
include: "rules/real_corpus.smk"
include: "rules/local_models.smk"
include: "rules/generate.smk"
include: "rules/synthetic_sets.smk"
include: "rules/diversity.smk"
include: "rules/tokenize.smk"
include: "rules/pretrain.smk"
include: "rules/convert.smk"
include: "rules/sft.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        pipeline.final_outputs(JOBS.values()),
    default_target: True


onsuccess:
    record_in_dvc_lock()
