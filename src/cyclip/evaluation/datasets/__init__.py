"""Evaluation datasets read from local copies (nothing is ever downloaded).

Classification (zero-shot, linear probes, robustness): `open_classification(name_or_path, root, split,
transform)` for a name in CLASSIFICATION_DATASETS read from its standard layout under `root`, or for a
labelled folder / ImageFolder tree when root is None. The layout each name expects under `root`:

    cifar10          cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
    cifar100         cifar-100-python/{train,test,meta}
    imagenet         val/<wnid>/*.JPEG, or val/*.JPEG plus exactly one of LOC_val_solution.csv (Kaggle),
                     val_labels.txt (no header; "image label" or "image,label" per line) or labels.csv
                     (header image,label) next to val/ or inside it, a label being an index 0..999 or a wnid;
                     train/<wnid>/*.JPEG; Kaggle's ILSVRC/Data/CLS-LOC/{train,val} in place of {train,val}
    imagenetv2       0/ .. 999/ (folder k holds ImageNet class k), as the ImageNetV2 tarballs extract
    imagenet-sketch  <wnid>/*.JPEG
    imagenet-a/-r    <wnid>/*.jpg: the classes are the wnid folders present, in ImageNet order
    caltech101       caltech101/101_ObjectCategories/<category>/image_NNNN.jpg
    dtd              dtd/dtd/{images,labels}/
    fgvc-aircraft    fgvc-aircraft-2013b/data/
    flowers102       flowers-102/{jpg/,imagelabels.mat,setid.mat}
    food101          food-101/{images,meta}/
    gtsrb            gtsrb/GTSRB/{Training,Final_Test/Images}/, gtsrb/GT-final_test.csv
    oxford-pets      oxford-iiit-pet/{images,annotations}/
    rendered-sst2    rendered-sst2/{train,valid,test}/{negative,positive}/
    stanford-cars    stanford_cars/{devkit/,cars_train/,cars_test/,cars_test_annos_withlabels.mat}
    stl10            stl10_binary/{train,test}_{X,y}.bin (+ class_names.txt)
    svhn             {train,test}_32x32.mat

Retrieval: `open_retrieval(path, image_root, split, transform)` for a Karpathy split JSON or an image,caption CSV.
"""

from cyclip.evaluation.datasets.classification import CLASSIFICATION_DATASETS, open_classification
from cyclip.evaluation.datasets.common import ClassificationSet
from cyclip.evaluation.datasets.retrieval import RetrievalSet, open_retrieval

__all__ = ["CLASSIFICATION_DATASETS", "ClassificationSet", "RetrievalSet", "open_classification", "open_retrieval"]
