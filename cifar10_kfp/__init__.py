"""Kubeflow Pipelines v2: the four DVC stages as one KFP pipeline, over the same stage code.

``cifar10_kfp.components`` holds the components (hand-written KFP functions), ``runtime`` and
``sweep_runtime`` what they run in their pods, ``sections`` how params.yaml travels (one JSON
text per section), ``pipeline`` and ``sweep`` the two pipelines, ``compile`` writes their YAML
and ``submit`` sends one to a cluster. The library (``pipeline/``) never imports this package;
only the components do, so the images need the repo root as their working directory.
"""
