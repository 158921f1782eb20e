"""Kubeflow Pipelines v2: the four DVC stages as one KFP pipeline, over the same stage code.

``kubeflow.pipeline`` defines the pipeline and its components, ``kubeflow.runtime`` is what a
component runs in its container, ``kubeflow.compile`` writes ``kubeflow/cifar10_pipeline.yaml``
and ``kubeflow.submit`` sends it to a cluster. The library (``pipeline/``) never imports this
package; only the components do, so the images need the repo root as their working directory.
"""
