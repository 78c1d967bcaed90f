// The Go driver v2 client program of the compatibility suite.
//
// Usage: go-client <uri> <database> <scenario.json>
//
// It runs the scenario's steps with the driver's public API, as a Go service would, and prints one
// report line: "@@compat-report@@" followed by JSON whose results are canonical Extended JSON.
// Built into the cache by scripts/compat-clients.mjs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/version"
)

const clientName = "go"

type stepError struct {
	Code        *int32       `json:"code,omitempty"`
	CodeName    string       `json:"codeName,omitempty"`
	Name        string       `json:"name,omitempty"`
	WriteErrors []writeError `json:"writeErrors,omitempty"`
	Message     string       `json:"message"`
}

type writeError struct {
	Index int   `json:"index"`
	Code  int32 `json:"code"`
}

type outcome struct {
	ID     string          `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *stepError      `json:"error,omitempty"`
}

type report struct {
	Client  string    `json:"client"`
	Version string    `json:"version"`
	Steps   []outcome `json:"steps"`
}

type strictSchemaError struct{ fields []string }

func (e strictSchemaError) Error() string {
	return "unexpected fields: " + strings.Join(e.fields, ", ")
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: go-client <uri> <database> <scenario.json>")
		os.Exit(2)
	}
	uri, dbName, scenarioFile := os.Args[1], os.Args[2], os.Args[3]
	text, err := os.ReadFile(scenarioFile)
	if err != nil {
		fail(err)
	}
	var scenario struct {
		Steps []json.RawMessage `json:"steps"`
	}
	if err := json.Unmarshal(text, &scenario); err != nil {
		fail(err)
	}
	// No deadline: with one the driver sends maxTimeMS on every command, and FerretDB refuses it
	// on distinct even direct (the harness bounds the whole program's run instead).
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		fail(err)
	}
	defer func() { _ = client.Disconnect(context.Background()) }()
	db := client.Database(dbName)

	out := report{Client: clientName, Version: "go driver " + version.Driver, Steps: []outcome{}}
	for _, raw := range scenario.Steps {
		// Relaxed Extended JSON in; bson.D keeps key order (sorts, index keys).
		var step bson.D
		if err := bson.UnmarshalExtJSON(raw, false, &step); err != nil {
			fail(err)
		}
		s := stepOf(step)
		if clients, ok := s["clients"].(bson.A); ok && !contains(clients, clientName) {
			continue
		}
		id, _ := s["id"].(string)
		result, err := runStep(ctx, client, db, s)
		if err != nil {
			out.Steps = append(out.Steps, outcome{ID: id, OK: false, Error: errorOf(err)})
			continue
		}
		encoded, err := bson.MarshalExtJSON(bson.D{{Key: "r", Value: result}}, true, false)
		if err != nil {
			fail(err)
		}
		var wrapper map[string]json.RawMessage
		if err := json.Unmarshal(encoded, &wrapper); err != nil {
			fail(err)
		}
		out.Steps = append(out.Steps, outcome{ID: id, OK: true, Result: wrapper["r"]})
	}
	line, err := json.Marshal(out)
	if err != nil {
		fail(err)
	}
	fmt.Println("@@compat-report@@" + string(line))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "go-client:", err)
	os.Exit(1)
}

func stepOf(d bson.D) map[string]any {
	m := make(map[string]any, len(d))
	for _, e := range d {
		m[e.Key] = e.Value
	}
	return m
}

func contains(list bson.A, name string) bool {
	for _, item := range list {
		if item == name {
			return true
		}
	}
	return false
}

func doc(v any) any {
	if v == nil {
		return bson.D{}
	}
	return v
}

func boolOf(v any) bool {
	b, _ := v.(bool)
	return b
}

func int64Of(v any) int64 {
	switch n := v.(type) {
	case int32:
		return int64(n)
	case int64:
		return n
	case float64:
		return int64(n)
	}
	return 0
}

func updateCounts(r *mongo.UpdateResult) bson.D {
	return bson.D{
		{Key: "matchedCount", Value: r.MatchedCount},
		{Key: "modifiedCount", Value: r.ModifiedCount},
		{Key: "upsertedCount", Value: r.UpsertedCount},
		{Key: "upsertedId", Value: r.UpsertedID},
	}
}

func allDocs(ctx context.Context, cursor *mongo.Cursor, err error) ([]bson.D, error) {
	if err != nil {
		return nil, err
	}
	docs := []bson.D{}
	if err := cursor.All(ctx, &docs); err != nil {
		return nil, err
	}
	return docs, nil
}

func checkStrict(docs []bson.D, allowed bson.A) error {
	for _, d := range docs {
		var extra []string
		for _, e := range d {
			if !contains(allowed, e.Key) {
				extra = append(extra, e.Key)
			}
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			return strictSchemaError{extra}
		}
	}
	return nil
}

func writeModel(request bson.D) (mongo.WriteModel, error) {
	if len(request) != 1 {
		return nil, errors.New("scenario: a bulk request has one key")
	}
	kind := request[0].Key
	spec := stepOf(request[0].Value.(bson.D))
	switch kind {
	case "insertOne":
		return mongo.NewInsertOneModel().SetDocument(spec["document"]), nil
	case "updateOne":
		return mongo.NewUpdateOneModel().SetFilter(spec["filter"]).SetUpdate(spec["update"]).SetUpsert(boolOf(spec["upsert"])), nil
	case "updateMany":
		return mongo.NewUpdateManyModel().SetFilter(spec["filter"]).SetUpdate(spec["update"]).SetUpsert(boolOf(spec["upsert"])), nil
	case "replaceOne":
		return mongo.NewReplaceOneModel().SetFilter(spec["filter"]).SetReplacement(spec["replacement"]).SetUpsert(boolOf(spec["upsert"])), nil
	case "deleteOne":
		return mongo.NewDeleteOneModel().SetFilter(spec["filter"]), nil
	case "deleteMany":
		return mongo.NewDeleteManyModel().SetFilter(spec["filter"]), nil
	}
	return nil, fmt.Errorf("scenario: unknown bulk request %s", kind)
}

func runStep(ctx context.Context, client *mongo.Client, db *mongo.Database, a map[string]any) (any, error) {
	op, _ := a["op"].(string)
	name, _ := a["collection"].(string)
	coll := db.Collection(name)
	switch op {
	case "insertOne":
		opts := options.InsertOne()
		if b, ok := a["bypassDocumentValidation"].(bool); ok {
			opts.SetBypassDocumentValidation(b)
		}
		r, err := coll.InsertOne(ctx, a["document"], opts)
		if err != nil {
			return nil, err
		}
		return bson.D{{Key: "insertedId", Value: r.InsertedID}}, nil
	case "insertMany":
		ordered := true
		if b, ok := a["ordered"].(bool); ok {
			ordered = b
		}
		r, err := coll.InsertMany(ctx, a["documents"].(bson.A), options.InsertMany().SetOrdered(ordered))
		if err != nil {
			return nil, err
		}
		return bson.D{{Key: "insertedCount", Value: int32(len(r.InsertedIDs))}, {Key: "insertedIds", Value: r.InsertedIDs}}, nil
	case "find", "findStrict":
		opts := options.Find()
		if v, ok := a["sort"]; ok {
			opts.SetSort(v)
		}
		if v, ok := a["projection"]; ok {
			opts.SetProjection(v)
		}
		if v, ok := a["limit"]; ok {
			opts.SetLimit(int64Of(v))
		}
		if v, ok := a["skip"]; ok {
			opts.SetSkip(int64Of(v))
		}
		if v, ok := a["comment"]; ok {
			opts.SetComment(v)
		}
		cursor, err := coll.Find(ctx, doc(a["filter"]), opts)
		docs, err := allDocs(ctx, cursor, err)
		if err != nil {
			return nil, err
		}
		if op == "findStrict" {
			if err := checkStrict(docs, a["allowedFields"].(bson.A)); err != nil {
				return nil, err
			}
		}
		return docs, nil
	case "findOne":
		opts := options.FindOne()
		if v, ok := a["projection"]; ok {
			opts.SetProjection(v)
		}
		var d bson.D
		err := coll.FindOne(ctx, doc(a["filter"]), opts).Decode(&d)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil, nil
		}
		return d, err
	case "countDocuments":
		return coll.CountDocuments(ctx, doc(a["filter"]))
	case "estimatedDocumentCount":
		return coll.EstimatedDocumentCount(ctx)
	case "distinct":
		field, _ := a["field"].(string)
		r := coll.Distinct(ctx, field, doc(a["filter"]))
		if r.Err() != nil {
			return nil, r.Err()
		}
		var values bson.A
		if err := r.Decode(&values); err != nil {
			return nil, err
		}
		return values, nil
	case "aggregate":
		cursor, err := coll.Aggregate(ctx, a["pipeline"])
		return allDocs(ctx, cursor, err)
	case "updateOne", "updateMany":
		var r *mongo.UpdateResult
		var err error
		if op == "updateOne" {
			opts := options.UpdateOne().SetUpsert(boolOf(a["upsert"]))
			if v, ok := a["arrayFilters"].(bson.A); ok {
				opts.SetArrayFilters([]any(v))
			}
			r, err = coll.UpdateOne(ctx, a["filter"], a["update"], opts)
		} else {
			opts := options.UpdateMany().SetUpsert(boolOf(a["upsert"]))
			if v, ok := a["arrayFilters"].(bson.A); ok {
				opts.SetArrayFilters([]any(v))
			}
			r, err = coll.UpdateMany(ctx, a["filter"], a["update"], opts)
		}
		if err != nil {
			return nil, err
		}
		return updateCounts(r), nil
	case "replaceOne":
		r, err := coll.ReplaceOne(ctx, a["filter"], a["replacement"], options.Replace().SetUpsert(boolOf(a["upsert"])))
		if err != nil {
			return nil, err
		}
		return updateCounts(r), nil
	case "deleteOne", "deleteMany":
		var r *mongo.DeleteResult
		var err error
		if op == "deleteOne" {
			r, err = coll.DeleteOne(ctx, a["filter"])
		} else {
			r, err = coll.DeleteMany(ctx, a["filter"])
		}
		if err != nil {
			return nil, err
		}
		return bson.D{{Key: "deletedCount", Value: r.DeletedCount}}, nil
	case "findOneAndUpdate", "findOneAndReplace", "findOneAndDelete":
		returnDocument := options.Before
		if a["returnDocument"] == "after" {
			returnDocument = options.After
		}
		var res *mongo.SingleResult
		switch op {
		case "findOneAndUpdate":
			opts := options.FindOneAndUpdate().SetUpsert(boolOf(a["upsert"])).SetReturnDocument(returnDocument)
			if v, ok := a["projection"]; ok {
				opts.SetProjection(v)
			}
			res = coll.FindOneAndUpdate(ctx, a["filter"], a["update"], opts)
		case "findOneAndReplace":
			opts := options.FindOneAndReplace().SetUpsert(boolOf(a["upsert"])).SetReturnDocument(returnDocument)
			res = coll.FindOneAndReplace(ctx, a["filter"], a["replacement"], opts)
		default:
			res = coll.FindOneAndDelete(ctx, a["filter"])
		}
		var d bson.D
		err := res.Decode(&d)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil, nil
		}
		return d, err
	case "bulkWrite":
		models := []mongo.WriteModel{}
		for _, request := range a["requests"].(bson.A) {
			model, err := writeModel(request.(bson.D))
			if err != nil {
				return nil, err
			}
			models = append(models, model)
		}
		ordered := true
		if b, ok := a["ordered"].(bool); ok {
			ordered = b
		}
		r, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(ordered))
		if err != nil {
			return nil, err
		}
		// The driver keys upserted ids by request index: report them in that order.
		indexes := make([]int, 0, len(r.UpsertedIDs))
		for index := range r.UpsertedIDs {
			indexes = append(indexes, int(index))
		}
		sort.Ints(indexes)
		upserted := bson.A{}
		for _, index := range indexes {
			upserted = append(upserted, r.UpsertedIDs[int64(index)])
		}
		return bson.D{
			{Key: "insertedCount", Value: r.InsertedCount},
			{Key: "matchedCount", Value: r.MatchedCount},
			{Key: "modifiedCount", Value: r.ModifiedCount},
			{Key: "deletedCount", Value: r.DeletedCount},
			{Key: "upsertedCount", Value: r.UpsertedCount},
			{Key: "upsertedIds", Value: upserted},
		}, nil
	case "createIndex":
		opts := options.Index()
		if o, ok := a["options"].(bson.D); ok {
			spec := stepOf(o)
			if v, ok := spec["unique"].(bool); ok {
				opts.SetUnique(v)
			}
			if v, ok := spec["name"].(string); ok {
				opts.SetName(v)
			}
		}
		return coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: a["keys"], Options: opts})
	case "listIndexes":
		cursor, err := coll.Indexes().List(ctx)
		docs, err := allDocs(ctx, cursor, err)
		if err != nil {
			return nil, err
		}
		indexes := []bson.D{}
		for _, d := range docs {
			spec := stepOf(d)
			unique, _ := spec["unique"].(bool)
			indexes = append(indexes, bson.D{{Key: "key", Value: spec["key"]}, {Key: "name", Value: spec["name"]}, {Key: "unique", Value: unique}})
		}
		sort.Slice(indexes, func(i, j int) bool {
			return fmt.Sprint(indexes[i][1].Value) < fmt.Sprint(indexes[j][1].Value)
		})
		return indexes, nil
	case "listCollections":
		names, err := db.ListCollectionNames(ctx, bson.D{})
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		return names, nil
	case "runCommand":
		target := db
		if name, ok := a["db"].(string); ok {
			target = client.Database(name)
		}
		var d bson.D
		err := target.RunCommand(ctx, a["command"]).Decode(&d)
		return d, err
	}
	return nil, fmt.Errorf("scenario: unknown op %s", op)
}

func errorOf(err error) *stepError {
	out := &stepError{Message: err.Error()}
	code := func(c int32) { out.Code = &c }
	var commandError mongo.CommandError
	var writeException mongo.WriteException
	var bulkException mongo.BulkWriteException
	var strict strictSchemaError
	switch {
	case errors.As(err, &bulkException):
		for _, w := range bulkException.WriteErrors {
			out.WriteErrors = append(out.WriteErrors, writeError{Index: w.Index, Code: int32(w.Code)})
		}
	case errors.As(err, &writeException):
		for _, w := range writeException.WriteErrors {
			out.WriteErrors = append(out.WriteErrors, writeError{Index: w.Index, Code: int32(w.Code)})
		}
	case errors.As(err, &commandError):
		code(commandError.Code)
		out.CodeName = commandError.Name
		return out
	case errors.As(err, &strict):
		out.Name = "StrictSchemaError"
		return out
	}
	if len(out.WriteErrors) > 0 {
		code(out.WriteErrors[0].Code)
		// A single-document write error is not a bulk write's list, as in the other clients.
		if len(out.WriteErrors) == 1 && !errors.As(err, &bulkException) {
			out.WriteErrors = nil
		}
		return out
	}
	out.Name = fmt.Sprintf("%T", err)
	return out
}
