from setuptools import find_packages, setup

setup(
    name="rdinet_tf",
    version="0.1.0",
    description="Robust dynamic inference networks (RDI-Nets) in TensorFlow/Keras with TFLite deployment",
    packages=find_packages(include=["rdinet_tf", "rdinet_tf.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "numpy>=1.26",
        "tensorflow-datasets>=4.9",
        "ai-edge-litert==2.3.0",
        "scikit-learn>=1.4",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "importlib_resources",  # tensorflow-datasets needs it at import time of its loaders
    ],
    entry_points={
        "console_scripts": [
            "rdinet-train=rdinet_tf.cli.train:main",
            "rdinet-evaluate=rdinet_tf.cli.evaluate:main",
            "rdinet-export=rdinet_tf.cli.export:main",
            "rdinet-prune=rdinet_tf.cli.prune:main",
            "rdinet-import-torch=rdinet_tf.cli.import_torch:main",
            "rdinet-bench=rdinet_tf.cli.bench:main",
        ],
    },
    extras_require={
        "pruning": ["tensorflow-model-optimization==0.8.1", "tf-keras==2.21.*"],
        # A CPU build: pip finds it in a local wheel directory (find-links) where there is one.
        "torch": ["torch==2.13.0"],
        "dev": [
            "pytest>=8",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "tensorflow-model-optimization==0.8.1",
            "tf-keras==2.21.*",
            "torch==2.13.0",
        ],
    },
)
