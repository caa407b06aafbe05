"""dlib's face-recognition ResNet evaluated in torch gives dlib's own embeddings."""

import importlib.util

import dlib
import numpy as np
import pytest
import torch

from callsynth.media import read_still
from callsynth.model.identity import CHIP_PADDING, CHIP_SIZE, DlibFaceEmbedder, IdentityModelError, \
    read_dlib_resnet



@pytest.fixture(scope="module")
def dlib_tools():
    models = importlib.util.find_spec("face_recognition_models").submodule_search_locations[0] + "/models/"
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(models + "shape_predictor_5_face_landmarks.dat"),
            dlib.face_recognition_model_v1(models + "dlib_face_recognition_resnet_model_v1.dat"))


def test_torch_embedding_matches_dlib_on_real_faces(data, dlib_tools):
    detector, predictor, recogniser = dlib_tools
    net = DlibFaceEmbedder()
    files = sorted((data / "images/london_neutral").iterdir())[:2] + [data / "video/pcavs/00067.mp4"]
    for path in files:
        image = np.ascontiguousarray(read_still(path))
        faces = detector(image, 1)
        assert faces, path
        chip = dlib.get_face_chip(image, predictor(image, faces[0]), size=CHIP_SIZE, padding=CHIP_PADDING)
        theirs = np.array(recogniser.compute_face_descriptor(chip))
        with torch.no_grad():
            ours = net(torch.from_numpy(np.asarray(chip, np.float32)).permute(2, 0, 1)[None])[0].numpy()
        cosine = theirs @ ours / np.linalg.norm(theirs) / np.linalg.norm(ours)
        assert cosine >= 0.99, (path, cosine)


def test_gradients_flow_to_the_image_but_the_network_is_frozen():
    net = DlibFaceEmbedder()
    chips = torch.full((1, 3, CHIP_SIZE, CHIP_SIZE), 120.0, requires_grad=True)
    net(chips).sum().backward()
    assert chips.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in net.parameters())


def test_a_file_that_is_not_the_network_is_refused(tmp_path):
    bogus = tmp_path / "model.dat"
    bogus.write_bytes(b"\x01\x01" * 1000)
    with pytest.raises(IdentityModelError, match="not dlib's face-recognition ResNet"):
        read_dlib_resnet(bogus)
