"""Kubeflow Pipelines v2: the four DVC stages as one KFP pipeline, over the same stage code.

``cifar10_kfp.pipeline`` defines the pipeline and its components, ``cifar10_kfp.runtime`` is what a
component runs in its container, ``cifar10_kfp.compile`` writes
``cifar10_kfp/cifar10_pipeline.yaml``
and ``cifar10_kfp.submit`` sends it to a cluster. The library (``pipeline/``) never imports this
package; only the components do, so the images need the repo root as their working directory.
"""
