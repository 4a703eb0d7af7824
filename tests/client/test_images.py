"""The pure image helpers: base64 coding, grids, PNG metadata."""

from PIL import Image, ImageChops

from dalleflow_client.images import decode_base64_image, encode_png, make_grid, read_png_metadata, save_png

COLOURS = ["red", "green", "blue", "yellow", "purple"]


def solid(colour: str, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_base64_png_round_trip_keeps_pixels():
    image = Image.effect_noise((17, 9), 64).convert("RGB")
    assert same_pixels(decode_base64_image(encode_png(image)), image)


def test_grid_is_square_ish_by_default_and_follows_columns():
    images = [solid(colour) for colour in COLOURS]
    assert make_grid(images).size == (3 * 40, 2 * 30)
    assert make_grid(images, columns=2).size == (2 * 40, 3 * 30)
    assert make_grid(images, columns=5).size == (5 * 40, 30)


def test_grid_cells_take_the_largest_image():
    grid = make_grid([solid("red", (32, 32)), solid("blue", (64, 48))], columns=2, show_indices=False)
    assert grid.size == (128, 48)
    assert grid.getpixel((0, 0)) == (255, 0, 0)
    assert grid.getpixel((40, 40)) == (0, 0, 0)  # below the small image: empty
    assert grid.getpixel((64, 0)) == (0, 0, 255)


def test_grid_places_images_in_order():
    grid = make_grid([solid(colour) for colour in COLOURS], columns=3, show_indices=False)
    for index, colour in enumerate(COLOURS):
        cell = grid.crop(((index % 3) * 40, (index // 3) * 30, (index % 3 + 1) * 40, (index // 3 + 1) * 30))
        assert same_pixels(cell, solid(colour))
    assert grid.getpixel((2 * 40 + 20, 30 + 15)) == (0, 0, 0)  # the sixth cell has no image


def test_grid_draws_each_index_in_the_top_left_corner_of_its_cell():
    size = 64
    images = [solid("gray", (size, size))] * 4
    plain = make_grid(images, columns=2, show_indices=False)
    labelled = make_grid(images, columns=2)
    corners = []
    for index in range(4):
        left, top = (index % 2) * size, (index // 2) * size
        changed = ImageChops.difference(
            plain.crop((left, top, left + size, top + size)), labelled.crop((left, top, left + size, top + size))
        ).getbbox()
        assert changed is not None, f"no label in cell {index}"
        assert changed[0] == 0 and changed[1] == 0  # the label box starts at the corner
        assert changed[2] <= size // 2 and changed[3] <= size // 2  # and stays in its quarter
        corners.append(labelled.crop((left, top, left + size // 2, top + size // 2)))
    # Different digits, different pixels: the label is the index, not a mark.
    assert len({corner.tobytes() for corner in corners}) == 4


def test_save_png_metadata_round_trip(tmp_path):
    image = solid("red")
    metadata = {"prompt": "un cercle rouge à gauche — ✓", "seed": 42, "clip_score": 0.25}
    path = save_png(image, tmp_path / "nested" / "a.png", metadata)
    assert path == tmp_path / "nested" / "a.png"
    assert read_png_metadata(path) == {"prompt": "un cercle rouge à gauche — ✓", "seed": "42", "clip_score": "0.25"}
    with Image.open(path) as reloaded:
        assert same_pixels(reloaded, image)
