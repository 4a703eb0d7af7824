"""The pure image helpers: base64 coding, grids, PNG metadata."""

from PIL import Image, ImageChops

from dalleflow_client.images import GUTTER, decode_base64_image, encode_png, make_grid, read_png_metadata, save_png

COLOURS = ["red", "green", "blue", "yellow", "purple"]


def solid(colour: str, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_base64_png_round_trip_keeps_pixels():
    image = Image.effect_noise((17, 9), 64).convert("RGB")
    assert same_pixels(decode_base64_image(encode_png(image)), image)


def cell_box(grid: Image.Image, index: int, columns: int, cell: tuple[int, int], band: int = 0) -> tuple[int, ...]:
    """Where make_grid puts image `index`: cells `cell` apart by its gutter, under a label band."""
    left = (index % columns) * (cell[0] + GUTTER)
    top = (index // columns) * (band + cell[1] + GUTTER) + band
    return left, top, left + cell[0], top + cell[1]


def test_grid_is_square_ish_by_default_and_follows_columns():
    images = [solid(colour, (400, 300)) for colour in COLOURS]  # large enough to stay as they are
    assert make_grid(images, show_indices=False).size == (3 * 400 + 2 * GUTTER, 2 * 300 + GUTTER)
    assert make_grid(images, columns=2, show_indices=False).size == (2 * 400 + GUTTER, 3 * 300 + 2 * GUTTER)
    assert make_grid(images, columns=5, show_indices=False).size == (5 * 400 + 4 * GUTTER, 300)


def test_grid_cells_take_the_largest_image():
    grid = make_grid([solid("red", (160, 160)), solid("blue", (320, 240))], columns=2, show_indices=False)
    assert grid.size == (2 * 320 + GUTTER, 240)
    assert grid.getpixel((0, 0)) == (255, 0, 0)
    assert grid.getpixel((100, 200)) == (0, 0, 0)  # below the small image: empty
    assert grid.getpixel((320 + GUTTER, 0)) == (0, 0, 255)


def test_grid_places_images_in_order():
    grid = make_grid([solid(colour, (200, 150)) for colour in COLOURS], columns=3, show_indices=False)
    for index, colour in enumerate(COLOURS):
        assert same_pixels(grid.crop(cell_box(grid, index, 3, (200, 150))), solid(colour, (200, 150)))
    assert grid.crop(cell_box(grid, 5, 3, (200, 150))).getcolors() == [(200 * 150, (0, 0, 0))]  # no sixth image


def test_small_images_are_scaled_up_by_a_whole_factor_nearest_neighbour():
    # Four candidates of the embedded 32 px models: 128 px cells, each pixel a 4 x 4 square.
    images = [Image.effect_noise((32, 32), 80).convert("RGB").rotate(90 * turn) for turn in range(4)]
    grid = make_grid(images, show_indices=False)
    assert grid.size == (2 * 128 + GUTTER, 2 * 128 + GUTTER)
    for index, image in enumerate(images):
        cell = grid.crop(cell_box(grid, index, 2, (128, 128)))
        assert same_pixels(cell, image.resize((128, 128), Image.Resampling.NEAREST)), index
    # One factor for the whole grid, so sizes stay comparable: a 40 x 30 image next to a 64 x 64 one.
    mixed = make_grid([solid("red", (40, 30)), solid("blue", (64, 64))], columns=2, show_indices=False)
    assert mixed.size == (2 * 128 + GUTTER, 128)
    assert mixed.crop((0, 0, 80, 60)).getcolors() == [(80 * 60, (255, 0, 0))]
    assert mixed.getpixel((80, 0)) == mixed.getpixel((0, 60)) == (0, 0, 0)
    assert make_grid(images, show_indices=False, min_cell_size=0).size == (2 * 32 + GUTTER, 2 * 32 + GUTTER)


def test_each_index_is_written_in_a_band_above_its_image_and_covers_no_pixel():
    images = [Image.effect_noise((32, 32), 80).convert("RGB").rotate(90 * turn) for turn in range(4)]
    plain = make_grid(images, columns=2, show_indices=False)
    labelled = make_grid(images, columns=2)
    band = (labelled.height - plain.height) // 2  # one band a row
    assert band >= 12 and labelled.width == plain.width
    bands = []
    for index, image in enumerate(images):
        # The image's own pixels, scaled, untouched by its label...
        cell = labelled.crop(cell_box(labelled, index, 2, (128, 128), band))
        assert same_pixels(cell, image.resize((128, 128), Image.Resampling.NEAREST)), index
        # ...which is in the band above it: light on black, the index's own digits.
        left, top, right, _ = cell_box(labelled, index, 2, (128, 128), band)
        label = labelled.crop((left, top - band, right, top)).convert("L")
        assert label.getextrema()[1] > 200, index
        bands.append(label.tobytes())
    assert len(set(bands)) == 4


def test_save_png_metadata_round_trip(tmp_path):
    image = solid("red")
    metadata = {"prompt": "un cercle rouge à gauche — ✓", "seed": 42, "clip_score": 0.25}
    path = save_png(image, tmp_path / "nested" / "a.png", metadata)
    assert path == tmp_path / "nested" / "a.png"
    assert read_png_metadata(path) == {"prompt": "un cercle rouge à gauche — ✓", "seed": "42", "clip_score": "0.25"}
    with Image.open(path) as reloaded:
        assert same_pixels(reloaded, image)
