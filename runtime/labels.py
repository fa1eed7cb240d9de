"""Fashion-MNIST class names, in label order (the dataset's own documentation).

The exporters embed these in every model; the runtime reads them back from the model,
so this list is used only when writing models.
"""

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
