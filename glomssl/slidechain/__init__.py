"""The whole-slide chain (``glomssl wsi``): slide -> detected, cropped, classified, segmented glomeruli.

- :mod:`glomssl.slidechain.chain`: options, the output-folder rules, workers, the run summary;
- :mod:`glomssl.slidechain.queue`: the resumable SQLite queue of slides and finished tiles;
- :mod:`glomssl.slidechain.process`: one slide through detect -> crop -> classify -> segment;
- :mod:`glomssl.slidechain.steps`: the classifier and segmenter behind one small interface each;
- :mod:`glomssl.slidechain.outputs`: ImageScope XML, QuPath GeoJSON, the table, summary, overview;
- :mod:`glomssl.slidechain.demo`: the demo slide built from the shipped aidpath tiles.
"""
