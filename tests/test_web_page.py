"""The web page in a real headless Chromium: a fake camera fed from a video of a garment,
and the file-picker fallback; the page must show the garment's label."""

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")
cv2 = pytest.importorskip("cv2")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from runtime import Predictor  # noqa: E402
from simulator.camera_sim import Scene, render  # noqa: E402

GUIDE = 0.8  # the page's guide box: a centred square, 80% of the short side
HELD = Scene(height_range=(0.5, 0.55), max_offset=0.03, max_rotation=4)  # a garment held inside the box


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """Chromium's fake camera reads YUV4MPEG2 (4:2:0 planar)."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


# The page scales and encodes in the browser (Skia, its own JPEG encoder), not as OpenCV does here:
# a garment is used only if the runtime picks it by this margin over the runner-up, so that a
# grey level or two of difference between the two paths cannot change the answer.
SCREEN_MARGIN = 0.3


def clearly(prediction, label: str) -> bool:
    """``label`` is the answer, ahead of the runner-up by SCREEN_MARGIN."""
    (first, p1), (_, p2) = prediction.top_k(2)
    return first == label and p1 - p2 >= SCREEN_MARGIN


def guide_crop(frame: np.ndarray) -> np.ndarray:
    """What the page sends for this frame (the guide box at 224 px, JPEG), as the server decodes it."""
    height, width = frame.shape[:2]
    side = round(min(width, height) * GUIDE)
    x, y = round((width - side) / 2), round((height - side) / 2)
    crop = cv2.resize(frame[y:y + side, x:x + side], (224, 224), interpolation=cv2.INTER_AREA)
    _, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)


def camera_video(fashion, label: str, path: Path) -> Path:
    """Frames of the first test garment of ``label`` that the runtime recognises in the guide box:
    three poses, each held for a second, as a hand holds a garment."""
    predictor = Predictor()
    index = predictor.labels.index(label)
    rng = np.random.default_rng(3)
    for i in np.flatnonzero(fashion.test_labels == index)[:20]:
        poses = [render(fashion.test_images[i], rng, HELD) for _ in range(3)]
        if all(clearly(predictor.predict(guide_crop(pose)), label) for pose in poses):
            write_y4m(path, [pose for pose in poses for _ in range(10)])
            return path
    pytest.fail(f"no test {label} is recognised in simulated frames")


def chromium(fake_video: Path | None = None, window: str = "1100,760"):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={window}", "--use-fake-ui-for-media-stream"):
        options.add_argument(flag)
    if fake_video is not None:
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-video-capture={fake_video}")
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)


def shown_label(driver, timeout: float = 40) -> str:
    label = driver.find_element(By.ID, "label")
    WebDriverWait(driver, timeout).until(lambda _: label.get_attribute("data-label"))
    return label.get_attribute("data-label")


@pytest.fixture(scope="module")
def page_url(start_server):
    url, _ = start_server()
    return url


@pytest.mark.parametrize("label, window", [("Trouser", "412,860"), ("Bag", "1100,760")], ids=["phone", "laptop"])
def test_live_camera_shows_the_garment_label(page_url, fashion, tmp_path, label, window):
    video = camera_video(fashion, label, tmp_path / "camera.y4m")
    driver = chromium(video, window)
    try:
        driver.get(page_url)
        assert shown_label(driver) == label
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "fps").text != "– fps")
        time.sleep(2)
        assert shown_label(driver) == label  # still, ten answers later
        assert 0 < float(driver.find_element(By.ID, "fps").text.split()[0]) <= 5.5  # a few requests a second
        assert float(driver.find_element(By.ID, "server-ms").text) > 0
        assert len(driver.find_elements(By.CSS_SELECTOR, "#results li")) == 3
        assert driver.find_element(By.ID, "status").text == ""
        shot = tmp_path / "web_page.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    image = cv2.imread(str(shot))
    amber = np.all(np.abs(image.astype(int) - (0, 220, 255)) < 40, axis=-1)  # BGR of the guide box
    assert amber.sum() > 500  # the overlay is drawn over the live video
    if os.environ.get("WEB_SCREENSHOT_DIR"):  # for the README: WEB_SCREENSHOT_DIR=docs pytest ...
        shutil.copy(shot, Path(os.environ["WEB_SCREENSHOT_DIR"]) / f"web_page_{label.lower()}.png")


def test_without_a_camera_a_picked_file_is_classified(page_url, fashion, tmp_path):
    predictor = Predictor()
    boots = np.flatnonzero(fashion.test_labels == predictor.labels.index("Ankle boot"))
    photos = (cv2.resize(255 - image, (280, 280)) for image in fashion.test_images[boots])  # dark on white
    photo = next(photo for photo in photos if clearly(predictor.predict(photo), "Ankle boot"))
    path = tmp_path / "boot.png"
    cv2.imwrite(str(path), photo)
    driver = chromium()  # no fake device: getUserMedia fails, the page offers the file picker
    try:
        driver.get(page_url)
        WebDriverWait(driver, 20).until(lambda d: "image" in d.find_element(By.ID, "status").text.lower())
        driver.find_element(By.ID, "file").send_keys(str(path))
        assert shown_label(driver) == "Ankle boot"
        assert driver.find_element(By.ID, "still").is_displayed()
        assert not driver.find_element(By.ID, "collect-form").is_displayed()  # the server does not collect
    finally:
        driver.quit()


def test_the_collect_panel_saves_to_the_typed_label(start_server, tmp_path):
    """A server started with --collect: the page shows the collect panel; with no camera, the picked
    image is saved to DIR/LABEL/ and the panel counts it."""
    collected = tmp_path / "collected"
    url, _ = start_server("--collect", str(collected))
    picture = np.full((90, 120, 3), 240, np.uint8)
    picture[20:70, 30:90] = (40, 60, 200)
    path = tmp_path / "cup.png"
    cv2.imwrite(str(path), picture)
    driver = chromium()
    try:
        driver.get(url)
        form = driver.find_element(By.ID, "collect-form")
        WebDriverWait(driver, 20).until(lambda _: form.is_displayed())
        button = driver.find_element(By.ID, "collect-button")
        assert not button.is_enabled()  # no label yet
        driver.find_element(By.ID, "collect-label").send_keys("red cup")
        assert button.text == "Save to red cup"
        button.click()  # nothing to save yet: no camera, no picked image
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "collect-status").text)
        driver.find_element(By.ID, "file").send_keys(str(path))
        shown_label(driver)
        for count in (1, 2):
            button.click()
            WebDriverWait(driver, 20).until(
                lambda d, n=count: d.find_element(By.ID, "collect-count").text == f"red cup: {n} saved")
        assert driver.find_element(By.ID, "collect-status").text == ""
    finally:
        driver.quit()
    saved = sorted((collected / "red cup").glob("*.png"))
    assert len(saved) == 2 and cv2.imread(str(saved[0]), cv2.IMREAD_UNCHANGED).shape == (90, 120, 3)


def test_the_page_follows_the_model_s_contract_behind_a_token(start_server, tmp_path):
    """A 2-label 20x20 gray model, /v1 behind a token: the page asks for the token, then reads the
    labels and input size from GET /v1/model and shows two bars, not three."""
    from contract_models import make_model

    model = make_model(tmp_path / "two.onnx", ("left", "right"), 20, 20, 1, kind="resize", seed=4)
    url, _ = start_server("--model", str(model), "--token", "s3cret")
    picture = np.zeros((90, 120), np.uint8)
    picture[20:70, 10:50] = 230
    path = tmp_path / "picture.png"
    cv2.imwrite(str(path), picture)
    expected = Predictor(model).predict(picture).label
    driver = chromium()
    try:
        driver.get(url)
        form = driver.find_element(By.ID, "token-form")
        WebDriverWait(driver, 20).until(lambda _: form.is_displayed())
        driver.find_element(By.ID, "token").send_keys("s3cret")
        form.find_element(By.TAG_NAME, "button").click()
        WebDriverWait(driver, 20).until(lambda d: "2 labels, 20×20 gray" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(path))
        assert shown_label(driver) == expected
        assert len(driver.find_elements(By.CSS_SELECTOR, "#results li")) == 2
        # the guide box is sent at least at the input size, at most 224 unless the input is larger
        sizes = driver.execute_script(
            "return [sendSide(480, {width: 20, height: 20}), sendSide(100, {width: 20, height: 20}), "
            "sendSide(12, {width: 20, height: 20}), sendSide(480, {width: 320, height: 256})]")
        assert sizes == [224, 100, 20, 320]
    finally:
        driver.quit()


def test_live_camera_with_a_colour_model(start_server, fashion, tmp_path):
    """A 32x32 RGB model with 5 labels: camera frames get an answer, three bars of five labels."""
    from contract_models import make_model

    labels = ("a", "b", "c", "d", "e")
    model = make_model(tmp_path / "rgb.onnx", labels, 32, 32, 3, kind="resize", seed=1)
    url, _ = start_server("--model", str(model))
    rng = np.random.default_rng(4)
    frames = [render(fashion.test_images[i], rng, HELD) for i in range(3)]
    video = tmp_path / "camera.y4m"
    write_y4m(video, [frame for frame in frames for _ in range(10)])
    driver = chromium(video)
    try:
        driver.get(url)
        assert shown_label(driver) in labels
        WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li")) == 3)
        assert "5 labels, 32×32 colour" in driver.find_element(By.ID, "model").text
        assert driver.find_element(By.ID, "status").text == ""
    finally:
        driver.quit()
