"""The interactive explorer (``python explore.py directions=...``): a local web page that edits
a seed's image with one slider a direction, for one or two directions files of one generator.

``render.py`` holds what is shown (the generator, the files, the renders; torch only);
``app.py`` the web app around it (Starlette + uvicorn, the optional ``explore`` extra);
``static/index.html`` the page (hand-written HTML, CSS and JS; nothing from another host).
"""
