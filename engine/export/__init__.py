"""Export: dpl pipelines as a workflow for the cluster a team already has.

`plan` turns the store's specs into steps and edges (one step per pipeline,
an edge where a pipeline reads another's output branch); `argo` writes the
plan as an Argo Workflow with hera, `kfp` as a Kubeflow Pipelines v2
pipeline with the kfp compiler.  Each step runs `dpl worker PIPELINE` (see
`worker`) against the store's S3 chunks and PostgreSQL metadata, so the
cluster keeps dpl's datums, skips and provenance: it schedules, dpl runs.
hera and kfp are optional (`pip install 'dpl[export]'`), imported only by
the module that writes their format.
"""
