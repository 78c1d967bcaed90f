"""The pymongo client program of the compatibility suite.

Usage: python pymongo_client.py <uri> <database> <scenario.json>

Runs the scenario's steps with pymongo's public API, as a Python application would, and prints
one report line: ``@@compat-report@@`` followed by JSON whose results are canonical Extended JSON.
The interpreter is a virtual environment with a pinned pymongo, made by scripts/compat-clients.mjs.
"""

import json
import sys

import pymongo
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS
from pymongo import (
    DeleteMany,
    DeleteOne,
    InsertOne,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
)
from pymongo.errors import BulkWriteError, PyMongoError

CLIENT = "pymongo"


class StrictSchemaError(Exception):
    """What an application with a closed schema (pydantic extra=forbid) raises on an unknown field."""


def check_strict(docs, allowed):
    for doc in docs:
        extra = sorted(key for key in doc if key not in allowed)
        if extra:
            raise StrictSchemaError("unexpected fields: " + ", ".join(extra))


def error_of(error):
    out = {"message": str(error)[:500]}
    details = getattr(error, "details", None) or {}
    write_errors = None
    if isinstance(error, BulkWriteError):
        write_errors = [{"index": w["index"], "code": w["code"]} for w in details.get("writeErrors", [])]
    code = getattr(error, "code", None)
    if isinstance(error, BulkWriteError) and write_errors:
        code = write_errors[0]["code"]
    if isinstance(code, int):
        out["code"] = code
    else:
        out["name"] = type(error).__name__
    if isinstance(details, dict) and isinstance(details.get("codeName"), str):
        out["codeName"] = details["codeName"]
    if write_errors:
        out["writeErrors"] = write_errors
    return out


def update_counts(r):
    return {
        "matchedCount": r.matched_count,
        "modifiedCount": r.modified_count,
        "upsertedCount": 1 if r.upserted_id is not None else 0,
        "upsertedId": r.upserted_id,
    }


def bulk_request(request):
    (kind, spec), = request.items()
    if kind == "insertOne":
        return InsertOne(spec["document"])
    if kind == "updateOne":
        return UpdateOne(spec["filter"], spec["update"], upsert=spec.get("upsert", False))
    if kind == "updateMany":
        return UpdateMany(spec["filter"], spec["update"], upsert=spec.get("upsert", False))
    if kind == "replaceOne":
        return ReplaceOne(spec["filter"], spec["replacement"], upsert=spec.get("upsert", False))
    if kind == "deleteOne":
        return DeleteOne(spec["filter"])
    if kind == "deleteMany":
        return DeleteMany(spec["filter"])
    raise ValueError("scenario: unknown bulk request " + kind)


def run_step(client, db, a):
    op = a["op"]
    coll = db[a["collection"]] if "collection" in a else None
    if op == "insertOne":
        kwargs = {}
        if "bypassDocumentValidation" in a:
            kwargs["bypass_document_validation"] = a["bypassDocumentValidation"]
        return {"insertedId": coll.insert_one(a["document"], **kwargs).inserted_id}
    if op == "insertMany":
        r = coll.insert_many(a["documents"], ordered=a.get("ordered", True))
        return {"insertedCount": len(r.inserted_ids), "insertedIds": r.inserted_ids}
    if op in ("find", "findStrict"):
        kwargs = {}
        if "sort" in a:
            kwargs["sort"] = list(a["sort"].items())
        if "projection" in a:
            kwargs["projection"] = a["projection"]
        if "limit" in a:
            kwargs["limit"] = a["limit"]
        if "skip" in a:
            kwargs["skip"] = a["skip"]
        if "comment" in a:
            kwargs["comment"] = a["comment"]
        docs = list(coll.find(a.get("filter", {}), **kwargs))
        if op == "findStrict":
            check_strict(docs, a["allowedFields"])
        return docs
    if op == "findOne":
        return coll.find_one(a.get("filter", {}), a.get("projection"))
    if op == "countDocuments":
        return coll.count_documents(a.get("filter", {}))
    if op == "estimatedDocumentCount":
        return coll.estimated_document_count()
    if op == "distinct":
        return coll.distinct(a["field"], a.get("filter", {}))
    if op == "aggregate":
        return list(coll.aggregate(a["pipeline"]))
    if op in ("updateOne", "updateMany"):
        kwargs = {"upsert": a.get("upsert", False)}
        if "arrayFilters" in a:
            kwargs["array_filters"] = a["arrayFilters"]
        method = coll.update_one if op == "updateOne" else coll.update_many
        return update_counts(method(a["filter"], a["update"], **kwargs))
    if op == "replaceOne":
        return update_counts(coll.replace_one(a["filter"], a["replacement"], upsert=a.get("upsert", False)))
    if op == "deleteOne":
        return {"deletedCount": coll.delete_one(a["filter"]).deleted_count}
    if op == "deleteMany":
        return {"deletedCount": coll.delete_many(a["filter"]).deleted_count}
    if op in ("findOneAndUpdate", "findOneAndReplace", "findOneAndDelete"):
        kwargs = {}
        if "projection" in a:
            kwargs["projection"] = a["projection"]
        if "sort" in a:
            kwargs["sort"] = list(a["sort"].items())
        if op == "findOneAndDelete":
            return coll.find_one_and_delete(a["filter"], **kwargs)
        kwargs["upsert"] = a.get("upsert", False)
        kwargs["return_document"] = ReturnDocument.AFTER if a.get("returnDocument") == "after" else ReturnDocument.BEFORE
        if op == "findOneAndUpdate":
            return coll.find_one_and_update(a["filter"], a["update"], **kwargs)
        return coll.find_one_and_replace(a["filter"], a["replacement"], **kwargs)
    if op == "bulkWrite":
        r = coll.bulk_write([bulk_request(req) for req in a["requests"]], ordered=a.get("ordered", True))
        return {
            "insertedCount": r.inserted_count,
            "matchedCount": r.matched_count,
            "modifiedCount": r.modified_count,
            "deletedCount": r.deleted_count,
            "upsertedCount": r.upserted_count,
            "upsertedIds": list(r.upserted_ids.values()),
        }
    if op == "createIndex":
        options = dict(a.get("options", {}))
        return coll.create_index(list(a["keys"].items()), **options)
    if op == "listIndexes":
        indexes = [
            {"key": index["key"], "name": index["name"], "unique": index.get("unique") is True}
            for index in coll.list_indexes()
        ]
        return sorted(indexes, key=lambda index: index["name"])
    if op == "listCollections":
        return sorted(db.list_collection_names())
    if op == "runCommand":
        target = client[a["db"]] if "db" in a else db
        return target.command(a["command"])
    raise ValueError("scenario: unknown op " + op)


def main():
    uri, db_name, scenario_file = sys.argv[1:4]
    with open(scenario_file, encoding="utf-8") as handle:
        scenario = json.load(handle)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000)
    db = client[db_name]
    outcomes = []
    try:
        for raw in scenario["steps"]:
            if "clients" in raw and CLIENT not in raw["clients"]:
                continue
            step = json_util.loads(json.dumps(raw), json_options=RELAXED_JSON_OPTIONS)
            try:
                result = run_step(client, db, step)
                encoded = json.loads(json_util.dumps({"r": result}, json_options=CANONICAL_JSON_OPTIONS))["r"]
                outcomes.append({"id": step["id"], "ok": True, "result": encoded})
            except (PyMongoError, StrictSchemaError) as error:
                outcomes.append({"id": step["id"], "ok": False, "error": error_of(error)})
    finally:
        client.close()
    report = {"client": CLIENT, "version": "pymongo " + pymongo.version, "steps": outcomes}
    print("@@compat-report@@" + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
