"""Small raw-format fixtures for the data_prep tests, built in code (layouts: data_prep/README.md).

Each builder writes a miniature copy of a public dataset's on-disk layout under ``root`` and
returns what the tests need to know about it. Images are tiny solid-colour files so that the
fixtures build in milliseconds.
"""

from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def write_image(path, w, h, color=(120, 60, 30), fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (w, h), color).save(path, format=fmt)


def image_bytes(w, h, color=(10, 200, 30), fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format=fmt)
    return buf.getvalue()


def rect_poly(x1, y1, x2, y2):
    """Flat COCO polygon with corners (x1, y1) and (x2, y2); pycocotools fills the pixels
    x1..x2-1 x y1..y2-1 (pixel i spans [i, i+1))."""
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def coco_instances(images, annotations):
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}


def make_grefcoco(root, *, missing_image=False, outside=False):
    """datasets/grefcoco/{grefs(unc).json, instances.json} + images/train2014/.

    refs (split val): 10 = one target (polygon), 11 = two targets (polygon + RLE) with two
    sentences, 12 = no target ([-1]), 13 = crowd only (kept, ReLA), 14 = missing image / outside coords
    when asked. One train ref (20) that a val run must ignore.
    """
    from pycocotools import mask as mask_utils

    img_dir = os.path.join(root, "images", "train2014")
    names = {1: "COCO_train2014_000000000001.jpg", 2: "COCO_train2014_000000000002.jpg", 3: "COCO_train2014_000000000003.jpg"}
    write_image(os.path.join(img_dir, names[1]), 100, 50)
    write_image(os.path.join(img_dir, names[2]), 200, 100)
    if not missing_image:
        write_image(os.path.join(img_dir, names[3]), 60, 60)
    rle_mask = np.zeros((100, 200), dtype=np.uint8, order="F")
    rle_mask[40:60, 100:150] = 1  # rows 40..59, cols 100..149
    rle = mask_utils.encode(rle_mask)
    rle["counts"] = rle["counts"].decode("ascii")
    anns = [
        {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 20, 10], "area": 200,
         "segmentation": [rect_poly(10, 10, 29, 19)]},
        {"id": 201, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 10, 10], "area": 100,
         "segmentation": [rect_poly(0, 0, 9, 9)]},
        {"id": 202, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [100, 40, 50, 20], "area": 1000,
         "segmentation": rle},
        {"id": 203, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 5, 5], "area": 25,
         "segmentation": [rect_poly(0, 0, 4, 4)]},
        {"id": 301, "image_id": 3, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 5, 5], "area": 25,
         "segmentation": [rect_poly(1, 1, 80 if outside else 5, 5)]},
    ]
    images = [{"id": 1, "file_name": names[1], "width": 100, "height": 50},
              {"id": 2, "file_name": names[2], "width": 200, "height": 100},
              {"id": 3, "file_name": names[3], "width": 60, "height": 60}]

    def ref(ref_id, image_id, ann_id, sents, split="val", no_target=False):
        return {"ref_id": ref_id, "image_id": image_id, "ann_id": ann_id, "category_id": [1], "split": split,
                "no_target": no_target, "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                "sent_ids": [s[0] for s in sents],
                "sentences": [{"tokens": t.split(), "raw": t, "sent": t.lower(), "sent_id": i} for i, t in sents]}

    refs = [
        ref(10, 1, [101], [(1, "The Brown Box.")]),
        ref(11, 2, [201, 202], [(2, "two boxes"), (3, "both things")]),
        ref(12, 72 if False else 1, [-1], [(5, "giraffe on left in orange")], no_target=True),
        ref(13, 2, [203], [(6, "the crowd")]),
        ref(14, 3, [301], [(7, "small thing")]),
        ref(20, 1, [101], [(9, "train only")], split="train"),
    ]
    d = os.path.join(root, "grefcoco")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "grefs(unc).json"), "w") as f:
        json.dump(refs, f)
    with open(os.path.join(d, "instances.json"), "w") as f:
        json.dump(coco_instances(images, anns), f)
    return root


def make_refcoco(root, dataset="refcocog", split_by="umd"):
    """refer layout: ROOT/<dataset>/refs(<split_by>).p (pickle) + instances.json, images under
    ROOT/images/mscoco/images/train2014 (LISA's layout). ann_id is a scalar here."""
    img_dir = os.path.join(root, "images", "mscoco", "images", "train2014")
    write_image(os.path.join(img_dir, "COCO_train2014_000000000007.jpg"), 80, 40)
    anns = [{"id": 7001, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [40, 0, 40, 40], "area": 1600,
             "segmentation": [rect_poly(40, 0, 79, 39)]}]
    images = [{"id": 7, "file_name": "COCO_train2014_000000000007.jpg", "width": 80, "height": 40}]
    refs = [{"ref_id": 0, "image_id": 7, "ann_id": 7001, "category_id": 1, "split": "val", "sent_ids": [0, 1],
             "file_name": "COCO_train2014_000000000007_7001.jpg",
             "sentences": [{"tokens": ["the", "right", "half"], "raw": "THE RIGHT HALF!", "sent": "the right half", "sent_id": 0},
                           {"tokens": ["right"], "raw": "right", "sent": "right", "sent_id": 1}]},
            {"ref_id": 1, "image_id": 7, "ann_id": 7001, "category_id": 1, "split": "test", "sent_ids": [2],
             "file_name": "x.jpg", "sentences": [{"tokens": ["x"], "raw": "x", "sent": "x", "sent_id": 2}]}]
    d = os.path.join(root, dataset)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"refs({split_by}).p"), "wb") as f:
        pickle.dump(refs, f)
    with open(os.path.join(d, "instances.json"), "w") as f:
        json.dump(coco_instances(images, anns), f)
    return root


def make_reasonseg(root, split="val"):
    """ReasonSeg/<split>/<name>.jpg + <name>.json (LabelMe shapes; one cp1252 file, one with a
    space in its name, one malformed JSON, one without a target region)."""
    d = os.path.join(root, split)
    shape = lambda label, pts: {"label": label, "labels": [label], "shape_type": "polygon",
                                "image_name": "x.jpg", "points": pts, "group_id": None, "group_ids": [None], "flags": {}}
    # a: target rectangle 20..39 x 10..29 and a second target blob 60..69 x 60..69, an ignore
    # hole inside the first, a flag shape covering everything
    write_image(os.path.join(d, "a.jpg"), 80, 80)
    ann_a = {"text": ["The thing to steer.", "variant two"], "is_sentence": True, "shapes": [
        shape("target", [[20, 10], [39, 10], [39, 29], [20, 29]]),
        shape("target", [[60, 60], [69, 60], [69, 69], [60, 69]]),
        shape("flag", [[0, 0], [79, 0], [79, 79], [0, 79]]),
    ]}
    with open(os.path.join(d, "a.json"), "w", encoding="utf-8") as f:
        json.dump(ann_a, f)
    write_image(os.path.join(d, "b 12.jpg"), 40, 40)
    ann_b = {"text": ["caf\u00e9 sign"], "is_sentence": False, "shapes": [shape("target", [[0, 0], [9, 0], [9, 9], [0, 9]])]}
    with open(os.path.join(d, "b 12.json"), "wb") as f:
        f.write(json.dumps(ann_b, ensure_ascii=False).encode("cp1252"))
    write_image(os.path.join(d, "c.jpg"), 40, 40)
    with open(os.path.join(d, "c.json"), "w") as f:
        f.write('{"text": ["broken", "shapes": [}')
    # d: no target region (only an ignore shape and a flag): a non-object sample, kept (LISA)
    write_image(os.path.join(d, "d.jpg"), 40, 40)
    ann_d = {"text": ["the unicorn"], "is_sentence": False, "shapes": [
        shape("ignore", [[5, 5], [20, 5], [20, 20], [5, 20]]), shape("flag", [[0, 0], [39, 0], [39, 39], [0, 39]])]}
    with open(os.path.join(d, "d.json"), "w") as f:
        json.dump(ann_d, f)
    return root


def make_omniact(root):
    """OmniACT split JSON (dict keyed by index) + task txt + screenshots + box JSONs; the web
    sample uses the on-disk spelling screen1.png / screen1_boxes.json."""
    def w(path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    write_image(os.path.join(root, "data/data/desktop/app/screen_1.png"), 400, 200, fmt="PNG")
    w(os.path.join(root, "data/tasks/desktop/app/task_1.1.txt"),
      "Task: Open the settings.\nOutput Script:\npyautogui.click(110.0,60.5)\n")
    w(os.path.join(root, "data/metadata/desktop/boxes/app/screen_1.json"), json.dumps({
        "a": {"label": "big_panel", "top_left": [0, 0], "bottom_right": [400, 200]},
        "b": {"label": "settings", "top_left": [100, 50], "bottom_right": [120, 70]},
    }))
    write_image(os.path.join(root, "data/data/web/site/screen1.png"), 200, 200, fmt="PNG")
    w(os.path.join(root, "data/tasks/web/site/task_1.2.txt"),
      "Task: search for shoes\nOutput Script:\npyautogui.write(\"shoes\")\npyautogui.doubleClick(50,150)\n")
    w(os.path.join(root, "data/metadata/web/boxes/site/screen1_boxes.json"), json.dumps({
        "k": {"label": "search_box", "top_left": [0, 100], "bottom_right": [100, 200]}}))
    w(os.path.join(root, "data/tasks/desktop/app/task_1.3.txt"), "Task: Type hello\nOutput Script:\npyautogui.write(\"hello\")\n")
    split = {
        "0": {"task": "data/tasks/desktop/app/task_1.1.txt", "image": "data/data/desktop/app/screen_1.png",
              "box": "data/metadata/desktop/boxes/app/screen_1.json"},
        "1": {"task": "data/tasks/web/site/task_1.2.txt", "image": "data/data/web/site/screen_1.png",
              "box": "data/metadata/web/boxes/site/screen_1.json"},
        "2": {"task": "data/tasks/desktop/app/task_1.3.txt", "image": "data/data/desktop/app/screen_1.png",
              "box": "data/metadata/desktop/boxes/app/screen_1.json"},
    }
    w(os.path.join(root, "test.json"), json.dumps(split))
    return root


def make_realiad(root, category="audiojack", nested=False):
    """realiad_jsons/<cat>.json + realiad_1024/<cat>/{OK,NG}/... with one normal sample, one NG
    sample with a two-blob mask and one NG view without a mask. ``nested``: the JSONs in
    realiad_jsons/realiad_jsons/, where the official realiad_jsons.zip unzips them."""
    base = os.path.join(root, "realiad_1024", category)
    ok = "OK/S0001/audiojack_0001_OK_C1_1.jpg"
    ng = "NG/AK/S0002/audiojack_0002_NG_C1_2.jpg"
    ng_mask = "NG/AK/S0002/audiojack_0002_NG_C1_2_mask.png"
    ng2 = "NG/AK/S0002/audiojack_0002_NG_C2_3.jpg"
    for p in (ok, ng, ng2):
        write_image(os.path.join(base, p), 100, 100)
    m = np.zeros((100, 100), dtype=np.uint8)
    m[10:20, 10:30] = 255  # blob 1: x 10..29, y 10..19
    m[70:80, 50:60] = 255  # blob 2: x 50..59, y 70..79
    Image.fromarray(m).save(os.path.join(base, ng_mask))
    meta = {"meta": {"prefix": category, "normal_class": "OK"}, "train": [], "test": [
        {"category": category, "anomaly_class": "OK", "image_path": ok, "mask_path": None},
        {"category": category, "anomaly_class": "AK", "image_path": ng, "mask_path": ng_mask},
        {"category": category, "anomaly_class": "AK", "image_path": ng2, "mask_path": None},
    ]}
    d = os.path.join(root, "realiad_jsons", *(["realiad_jsons"] if nested else []))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{category}.json"), "w") as f:
        json.dump(meta, f)
    return root


def make_isic(root, part="Validation"):
    """ISIC2018 input/ground-truth folders: one lesion image, one with an empty mask, plus
    non-image files that must be ignored."""
    i = os.path.join(root, f"ISIC2018_Task1-2_{part}_Input")
    g = os.path.join(root, f"ISIC2018_Task1_{part}_GroundTruth")
    write_image(os.path.join(i, "ISIC_0000001.jpg"), 120, 90)
    write_image(os.path.join(i, "ISIC_0000002.jpg"), 50, 50)
    with open(os.path.join(i, "ATTRIBUTION.txt"), "w") as f:
        f.write("x")
    os.makedirs(g, exist_ok=True)
    m = np.zeros((90, 120), dtype=np.uint8)
    m[30:61, 40:81] = 255  # x 40..80, y 30..60
    Image.fromarray(m).save(os.path.join(g, "ISIC_0000001_segmentation.png"))
    Image.fromarray(np.zeros((50, 50), dtype=np.uint8)).save(os.path.join(g, "ISIC_0000002_segmentation.png"))
    return root


# Real MathVista testmini records and their queries, verbatim from lupantech/MathVista
# data/testmini.json and data/query.json (commit 53d5258): pids 2 (free form, unit), 5 and 17
# (multiple choice, numeric options; 17 in Chinese) and 7 (multiple choice, text options).
MATHVISTA_RECORDS = {'2': {'question': 'what is the total volume of the measuring cup?',
       'image': 'images/2.jpg',
       'choices': None,
       'unit': 'g',
       'precision': None,
       'answer': '1000',
       'question_type': 'free_form',
       'answer_type': 'integer',
       'pid': '2',
       'metadata': {'split': 'testmini',
                    'language': 'english',
                    'img_width': 1024,
                    'img_height': 768,
                    'source': 'TextVQA',
                    'category': 'general-vqa',
                    'task': 'visual question answering',
                    'context': 'natural image',
                    'grade': 'not applicable',
                    'skills': ['numeric commonsense', 'arithmetic reasoning']}},
 '5': {'question': 'Find $m\\angle H$',
       'image': 'images/5.jpg',
       'choices': ['97', '102', '107', '122'],
       'unit': None,
       'precision': None,
       'answer': '97',
       'question_type': 'multi_choice',
       'answer_type': 'text',
       'pid': '5',
       'metadata': {'split': 'testmini',
                    'language': 'english',
                    'img_width': 322,
                    'img_height': 245,
                    'source': 'Geometry3K',
                    'category': 'math-targeted-vqa',
                    'task': 'geometry problem solving',
                    'context': 'geometry diagram',
                    'grade': 'high school',
                    'skills': ['geometry reasoning', 'algebraic reasoning']}},
 '7': {'question': 'What time is shown? Answer by typing a time word, not a number. It is (_) after eight.',
       'image': 'images/7.jpg',
       'choices': ['half', 'quarter', "o'clock", 'quarter to', 'quarter past'],
       'unit': None,
       'precision': None,
       'answer': 'quarter',
       'question_type': 'multi_choice',
       'answer_type': 'text',
       'pid': '7',
       'metadata': {'split': 'testmini',
                    'language': 'english',
                    'img_width': 203,
                    'img_height': 204,
                    'source': 'IconQA',
                    'category': 'math-targeted-vqa',
                    'task': 'math word problem',
                    'context': 'abstract scene',
                    'grade': 'elementary school',
                    'skills': ['numeric commonsense']}},
 '17': {'question': '如图，在Rt△ABC中，∠ACB＝90°，D是AB的中点，AB＝10，则CD的长为（）',
        'image': 'images/17.jpg',
        'choices': ['5', '6', '8', '10'],
        'unit': None,
        'precision': None,
        'answer': '5',
        'question_type': 'multi_choice',
        'answer_type': 'text',
        'pid': '17',
        'metadata': {'split': 'testmini',
                     'language': 'chinese',
                     'img_width': 125,
                     'img_height': 172,
                     'source': 'GeoQA+',
                     'category': 'math-targeted-vqa',
                     'task': 'geometry problem solving',
                     'context': 'geometry diagram',
                     'grade': 'high school',
                     'skills': ['geometry reasoning', 'algebraic reasoning']}}}
MATHVISTA_QUERIES = {'2': 'Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, '
      '3, at the end.\n'
      'Question: what is the total volume of the measuring cup? (Unit: g)',
 '5': 'Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the '
      'end.\n'
      'Question: Find $m\\angle H$\n'
      'Choices:\n'
      '(A) 97\n'
      '(B) 102\n'
      '(C) 107\n'
      '(D) 122',
 '7': 'Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the '
      'end.\n'
      'Question: What time is shown? Answer by typing a time word, not a number. It is (_) after eight.\n'
      'Choices:\n'
      '(A) half\n'
      '(B) quarter\n'
      "(C) o'clock\n"
      '(D) quarter to\n'
      '(E) quarter past',
 '17': 'Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the '
       'end.\n'
       'Question: 如图，在Rt△ABC中，∠ACB＝90°，D是AB的中点，AB＝10，则CD的长为（）\n'
       'Choices:\n'
       '(A) 5\n'
       '(B) 6\n'
       '(C) 8\n'
       '(D) 10'}


def make_mathvista_root(root, layout="official"):
    """A MathVista checkout: data/testmini.json + data/query.json, placeholder images of the
    recorded size (metadata img_width/img_height). ``layout="official"``: images in data/images/
    (MathVista's README: ``cd data; unzip images.zip``); ``"root"``: images in ROOT/images/."""
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    img_base = os.path.join(root, "data") if layout == "official" else root
    for pid, r in MATHVISTA_RECORDS.items():
        write_image(os.path.join(img_base, r["image"]), r["metadata"]["img_width"], r["metadata"]["img_height"])
    with open(os.path.join(root, "data", "testmini.json"), "w") as f:
        json.dump(MATHVISTA_RECORDS, f)
    with open(os.path.join(root, "data", "query.json"), "w") as f:
        json.dump(MATHVISTA_QUERIES, f)
    return root


def _image_struct():
    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def make_mathvista_parquet(path):
    rows = []
    for pid in MATHVISTA_RECORDS:
        r = dict(MATHVISTA_RECORDS[pid])
        r["decoded_image"] = {"bytes": image_bytes(64, 48, fmt="JPEG"), "path": f"{pid}.jpg"}
        r["query"] = MATHVISTA_QUERIES[pid]
        r["precision"] = None
        r.pop("metadata")
        rows.append(r)
    schema = pa.schema([("pid", pa.string()), ("question", pa.string()), ("image", pa.string()),
                        ("decoded_image", _image_struct()), ("choices", pa.list_(pa.string())), ("unit", pa.string()),
                        ("precision", pa.float64()), ("answer", pa.string()), ("question_type", pa.string()),
                        ("answer_type", pa.string()), ("query", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def make_geo3k_parquet(path):
    rows = [
        {"images": [{"bytes": image_bytes(90, 60), "path": None}], "problem": "<image>Find x.", "answer": "3",
         "id": 0, "choices": ["1", "3", "5", "7"], "ground_truth": "B"},
        {"images": [{"bytes": image_bytes(90, 60), "path": None}], "problem": "<image>Find y.", "answer": "\\frac{1}{2}",
         "id": 1, "choices": None, "ground_truth": None},
        {"images": [], "problem": "<image>No image.", "answer": "1", "id": 2, "choices": None, "ground_truth": None},
    ]
    schema = pa.schema([("images", pa.list_(_image_struct())), ("problem", pa.string()), ("answer", pa.string()),
                        ("id", pa.int64()), ("choices", pa.list_(pa.string())), ("ground_truth", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def make_visurf_parquet(path):
    sol = '[{"bbox_2d": [416, 7, 833, 553], "point_2d": [648, 249]}]'
    rows = [
        {"id": "a", "problem": "The lady with the blue shirt.", "solution": sol, "image": {"bytes": image_bytes(840, 840), "path": None},
         "img_height": 480, "img_width": 640},
        {"id": "b", "problem": "nothing here", "solution": "[]", "image": {"bytes": image_bytes(300, 200, fmt="JPEG"), "path": None},
         "img_height": 200, "img_width": 300},
        {"id": "c", "problem": "old style", "solution": "<box>(10,20),(110,220)</box><points>(50,60),(70,80)</points>",
         "image": {"bytes": image_bytes(840, 840), "path": None}, "img_height": 840, "img_width": 840},
        {"id": "d", "problem": "bad", "solution": '[{"bbox_2d": [10, 10, 5, 900]}]',
         "image": {"bytes": image_bytes(840, 840), "path": None}, "img_height": 840, "img_width": 840},
    ]
    schema = pa.schema([("id", pa.string()), ("problem", pa.string()), ("solution", pa.string()), ("image", _image_struct()),
                        ("img_height", pa.int64()), ("img_width", pa.int64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


# ---------------------------------------------------------------------------------------------
# Real public RefCOCO / COCO records (issue 14). Source: the "Example" section of a refer-API
# README (lichengunc/refer derivative) that prints data["images"][0] and data["annotations"][0]
# of data/refcoco/instances.json and refs(unc).p's first ref: COCO train2014 image 98304
# (640x424) and its polygon annotation 3007 (category 18), verbatim.
# ---------------------------------------------------------------------------------------------
REFCOCO_IMAGE_98304 = {
    "license": 1, "file_name": "COCO_train2014_000000098304.jpg", "coco_url": "http://mscoco.org/images/98304",
    "height": 424, "width": 640, "date_captured": "2013-11-21 23:06:41",
    "flickr_url": "http://farm6.staticflickr.com/5062/5896644212_a326e96ea9_z.jpg", "id": 98304,
}
REFCOCO_ANN_3007 = {
    "segmentation": [[
        267.52, 229.75, 265.6, 226.68, 265.79, 223.6, 263.87, 220.15,
        263.87, 216.88, 266.94, 217.07, 268.48, 221.3, 272.32, 219.95,
        276.35, 220.15, 279.62, 218.03, 283.46, 218.42, 285.0, 220.92,
        285.0, 223.22, 284.42, 224.95, 280.96, 225.14, 279.81, 226.48,
        281.73, 228.41, 279.43, 229.37, 275.78, 229.17, 273.86, 229.56,
        274.24, 232.05, 269.82, 231.67, 267.14, 231.48, 266.75, 228.6,
    ]],
    "area": 197.29899999999986, "iscrowd": 0, "image_id": 98304, "bbox": [263.87, 216.88, 21.13, 15.17],
    "category_id": 18, "id": 3007,
}
# refs(unc).p[0] as printed there (it refers to annotation 1719310, whose polygon is not published).
REFCOCO_REF_0 = {
    "sent_ids": [0, 1, 2], "file_name": "COCO_train2014_000000581857_16.jpg", "ann_id": 1719310, "ref_id": 0,
    "image_id": 581857, "split": "train",
    "sentences": [
        {"tokens": ["the", "lady", "with", "the", "blue", "shirt"], "raw": "THE LADY WITH THE BLUE SHIRT",
         "sent_id": 0, "sent": "the lady with the blue shirt"},
        {"tokens": ["lady", "with", "back", "to", "us"], "raw": "lady w back to us", "sent_id": 1,
         "sent": "lady with back to us"},
        {"tokens": ["blue", "shirt"], "raw": "blue shirt", "sent_id": 2, "sent": "blue shirt"},
    ],
    "category_id": 1,
}


def make_refcoco_real(root, dataset="refcoco", split_by="unc", refs=None):
    """refer layout with the real records above: instances.json = image 98304 + annotation 3007,
    refs(unc).p = REFCOCO_REF_0 re-pointed at that annotation (image_id 98304, ann_id 3007,
    split val: the one change, since annotation 1719310 is not published). A 640x424
    placeholder image stands in for the photo. ``refs``: pickle this object instead."""
    img = REFCOCO_IMAGE_98304
    write_image(os.path.join(root, "images", "train2014", img["file_name"]), img["width"], img["height"])
    ref = dict(REFCOCO_REF_0, image_id=98304, ann_id=3007, split="val")
    d = os.path.join(root, dataset)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"refs({split_by}).p"), "wb") as f:
        pickle.dump([ref] if refs is None else refs, f, protocol=2)
    with open(os.path.join(d, "instances.json"), "w") as f:
        json.dump(coco_instances([img], [REFCOCO_ANN_3007]), f)
    return os.path.join(d, "instances.json")


def make_geo3k_card_parquet(path):
    """A parquet with exactly the columns of the public hiyouga/geometry3k card (images, problem,
    answer), one row built the way its conversion script builds rows (problem = "<image>" +
    the problem text, answer = the text of the correct choice, no choices column), from a real
    Geometry3K problem as MathVista testmini records it (pid 5, source Geometry3K: "Find
    $m\\angle H$", answer "97", a 322x245 diagram; placeholder image of that size)."""
    r = MATHVISTA_RECORDS["5"]
    rows = [{"images": [{"bytes": image_bytes(r["metadata"]["img_width"], r["metadata"]["img_height"]), "path": None}],
             "problem": "<image>" + r["question"], "answer": r["answer"]}]
    schema = pa.schema([("images", pa.list_(_image_struct())), ("problem", pa.string()), ("answer", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path
