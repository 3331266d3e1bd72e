"""A small real Flask app: an HTML page, a JSON endpoint, a form POST and an upload."""

import hashlib

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "<!doctype html><title>flask</title><h1>Hello from Flask</h1>"


@app.get("/json")
def as_json():
    return jsonify(args=request.args.to_dict(), path=request.path, root=request.root_path)


@app.post("/form")
def form():
    return f"<p>Thanks, {request.form.get('name', '?')} ({request.form.get('level', '?')})</p>"


@app.post("/upload")
def upload():
    data = request.get_data()
    return jsonify(length=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/missing-on-purpose")
def not_found():
    return "nope", 404
