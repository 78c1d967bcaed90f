// The Java sync driver client program of the compatibility suite.
//
// Usage: java -cp <driver jars>:<classes> CompatClient <uri> <database> <scenario.json>
//
// It runs the scenario's steps with the driver's public API, as a Java service would, and prints
// one report line: "@@compat-report@@" followed by JSON whose results are canonical Extended JSON.
// Built into the cache by scripts/compat-clients.mjs (npm run test:compat:java).
import com.mongodb.ConnectionString;
import com.mongodb.MongoBulkWriteException;
import com.mongodb.MongoClientSettings;
import com.mongodb.MongoCommandException;
import com.mongodb.MongoServerException;
import com.mongodb.MongoWriteException;
import com.mongodb.bulk.BulkWriteError;
import com.mongodb.bulk.BulkWriteResult;
import com.mongodb.bulk.BulkWriteUpsert;
import com.mongodb.client.FindIterable;
import com.mongodb.client.MongoClient;
import com.mongodb.client.MongoClients;
import com.mongodb.client.MongoCollection;
import com.mongodb.client.MongoDatabase;
import com.mongodb.client.model.BulkWriteOptions;
import com.mongodb.client.model.DeleteManyModel;
import com.mongodb.client.model.DeleteOneModel;
import com.mongodb.client.model.FindOneAndDeleteOptions;
import com.mongodb.client.model.FindOneAndReplaceOptions;
import com.mongodb.client.model.FindOneAndUpdateOptions;
import com.mongodb.client.model.IndexOptions;
import com.mongodb.client.model.InsertManyOptions;
import com.mongodb.client.model.InsertOneModel;
import com.mongodb.client.model.InsertOneOptions;
import com.mongodb.client.model.ReplaceOneModel;
import com.mongodb.client.model.ReplaceOptions;
import com.mongodb.client.model.ReturnDocument;
import com.mongodb.client.model.UpdateManyModel;
import com.mongodb.client.model.UpdateOneModel;
import com.mongodb.client.model.UpdateOptions;
import com.mongodb.client.model.WriteModel;
import com.mongodb.client.result.UpdateResult;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import org.bson.BsonValue;
import org.bson.Document;
import org.bson.conversions.Bson;
import org.bson.json.JsonMode;
import org.bson.json.JsonWriterSettings;

public final class CompatClient {
  private static final String CLIENT = "java";
  private static final JsonWriterSettings CANONICAL = JsonWriterSettings.builder().outputMode(JsonMode.EXTENDED).build();

  /** What an application with a closed schema (a Java record) does with an unknown field. */
  static final class StrictSchemaException extends RuntimeException {
    StrictSchemaException(String message) {
      super(message);
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 3) {
      System.err.println("usage: CompatClient <uri> <database> <scenario.json>");
      System.exit(2);
    }
    Document scenario = Document.parse(Files.readString(Path.of(args[2]), StandardCharsets.UTF_8));
    MongoClientSettings settings = MongoClientSettings.builder()
        .applyConnectionString(new ConnectionString(args[0]))
        .applyToClusterSettings(b -> b.serverSelectionTimeout(10, TimeUnit.SECONDS))
        .build();
    StringBuilder steps = new StringBuilder();
    try (MongoClient client = MongoClients.create(settings)) {
      MongoDatabase db = client.getDatabase(args[1]);
      for (Object raw : scenario.getList("steps", Object.class)) {
        Document step = (Document) raw;
        List<?> clients = step.getList("clients", Object.class);
        if (clients != null && !clients.contains(CLIENT)) continue;
        String id = step.getString("id");
        if (steps.length() > 0) steps.append(',');
        try {
          Object result = runStep(client, db, step);
          String wrapped = new Document("r", result).toJson(CANONICAL);
          String value = wrapped.substring(wrapped.indexOf(':') + 1, wrapped.length() - 1).trim();
          steps.append("{\"id\":").append(quote(id)).append(",\"ok\":true,\"result\":").append(value).append('}');
        } catch (RuntimeException e) {
          // Not only MongoException: the driver throws BsonInvalidOperationException on some FerretDB write-error replies.
          steps.append("{\"id\":").append(quote(id)).append(",\"ok\":false,\"error\":").append(errorOf(e)).append('}');
        }
      }
    }
    String version = MongoClient.class.getPackage().getImplementationVersion();
    System.out.println("@@compat-report@@{\"client\":\"java\",\"version\":" + quote("java sync driver " + version)
        + ",\"steps\":[" + steps + "]}");
  }

  private static String quote(String text) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : (text == null ? "" : text).toCharArray()) {
      if (c == '"' || c == '\\') out.append('\\').append(c);
      else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
      else out.append(c);
    }
    return out.append('"').toString();
  }

  private static String errorOf(RuntimeException e) {
    StringBuilder out = new StringBuilder("{\"message\":").append(quote(String.valueOf(e.getMessage())));
    if (e instanceof MongoBulkWriteException bulk) {
      List<BulkWriteError> errors = bulk.getWriteErrors();
      if (!errors.isEmpty()) out.append(",\"code\":").append(errors.get(0).getCode());
      out.append(",\"writeErrors\":[");
      for (int i = 0; i < errors.size(); i++) {
        if (i > 0) out.append(',');
        out.append("{\"index\":").append(errors.get(i).getIndex()).append(",\"code\":").append(errors.get(i).getCode()).append('}');
      }
      out.append(']');
    } else if (e instanceof MongoWriteException write) {
      out.append(",\"code\":").append(write.getError().getCode());
    } else if (e instanceof MongoCommandException command) {
      out.append(",\"code\":").append(command.getErrorCode()).append(",\"codeName\":").append(quote(command.getErrorCodeName()));
    } else if (e instanceof MongoServerException server) {
      out.append(",\"code\":").append(server.getCode());
    } else {
      out.append(",\"name\":").append(quote(e instanceof StrictSchemaException ? "StrictSchemaError" : e.getClass().getSimpleName()));
    }
    return out.append('}').toString();
  }

  private static Document doc(Document step, String key) {
    Document value = step.get(key, Document.class);
    return value == null ? new Document() : value;
  }

  private static boolean flag(Document step, String key) {
    return Boolean.TRUE.equals(step.getBoolean(key));
  }

  @SuppressWarnings("unchecked")
  private static List<Document> docs(Object value) {
    return (List<Document>) value;
  }

  private static Document updateCounts(UpdateResult r) {
    return new Document("matchedCount", r.getMatchedCount())
        .append("modifiedCount", r.getModifiedCount())
        .append("upsertedCount", r.getUpsertedId() == null ? 0 : 1)
        .append("upsertedId", r.getUpsertedId());
  }

  private static UpdateOptions updateOptions(Document step) {
    UpdateOptions options = new UpdateOptions().upsert(flag(step, "upsert"));
    if (step.containsKey("arrayFilters")) options.arrayFilters(docs(step.get("arrayFilters")));
    return options;
  }

  private static void checkStrict(List<Document> found, List<?> allowed) {
    for (Document d : found) {
      List<String> extra = new ArrayList<>();
      for (String key : d.keySet()) if (!allowed.contains(key)) extra.add(key);
      if (!extra.isEmpty()) {
        extra.sort(Comparator.naturalOrder());
        throw new StrictSchemaException("unexpected fields: " + String.join(", ", extra));
      }
    }
  }

  private static WriteModel<Document> writeModel(Document request) {
    Map.Entry<String, Object> entry = request.entrySet().iterator().next();
    Document spec = (Document) entry.getValue();
    ReplaceOptions replace = new ReplaceOptions().upsert(flag(spec, "upsert"));
    UpdateOptions update = new UpdateOptions().upsert(flag(spec, "upsert"));
    switch (entry.getKey()) {
      case "insertOne": return new InsertOneModel<>(doc(spec, "document"));
      case "updateOne": return new UpdateOneModel<>(doc(spec, "filter"), doc(spec, "update"), update);
      case "updateMany": return new UpdateManyModel<>(doc(spec, "filter"), doc(spec, "update"), update);
      case "replaceOne": return new ReplaceOneModel<>(doc(spec, "filter"), doc(spec, "replacement"), replace);
      case "deleteOne": return new DeleteOneModel<>(doc(spec, "filter"));
      case "deleteMany": return new DeleteManyModel<>(doc(spec, "filter"));
      default: throw new IllegalArgumentException("scenario: unknown bulk request " + entry.getKey());
    }
  }

  private static Object runStep(MongoClient client, MongoDatabase db, Document a) {
    String op = a.getString("op");
    MongoCollection<Document> coll = a.containsKey("collection") ? db.getCollection(a.getString("collection")) : null;
    switch (op) {
      case "insertOne": {
        InsertOneOptions options = new InsertOneOptions();
        if (a.containsKey("bypassDocumentValidation")) options.bypassDocumentValidation(a.getBoolean("bypassDocumentValidation"));
        return new Document("insertedId", coll.insertOne(doc(a, "document"), options).getInsertedId());
      }
      case "insertMany": {
        boolean ordered = !a.containsKey("ordered") || a.getBoolean("ordered");
        Map<Integer, BsonValue> ids = new TreeMap<>(coll.insertMany(docs(a.get("documents")), new InsertManyOptions().ordered(ordered)).getInsertedIds());
        return new Document("insertedCount", ids.size()).append("insertedIds", new ArrayList<>(ids.values()));
      }
      case "find":
      case "findStrict": {
        FindIterable<Document> cursor = coll.find(doc(a, "filter"));
        if (a.containsKey("sort")) cursor = cursor.sort(doc(a, "sort"));
        if (a.containsKey("projection")) cursor = cursor.projection(doc(a, "projection"));
        if (a.containsKey("limit")) cursor = cursor.limit(a.getInteger("limit"));
        if (a.containsKey("skip")) cursor = cursor.skip(a.getInteger("skip"));
        if (a.containsKey("comment")) cursor = cursor.comment(a.getString("comment"));
        List<Document> found = cursor.into(new ArrayList<>());
        if (op.equals("findStrict")) checkStrict(found, a.getList("allowedFields", Object.class));
        return found;
      }
      case "findOne": {
        FindIterable<Document> cursor = coll.find(doc(a, "filter"));
        if (a.containsKey("projection")) cursor = cursor.projection(doc(a, "projection"));
        return cursor.first();
      }
      case "countDocuments": return coll.countDocuments(doc(a, "filter"));
      case "estimatedDocumentCount": return coll.estimatedDocumentCount();
      case "distinct": return coll.distinct(a.getString("field"), doc(a, "filter"), BsonValue.class).into(new ArrayList<>());
      case "aggregate": return coll.aggregate(docs(a.get("pipeline"))).into(new ArrayList<>());
      case "updateOne":
      case "updateMany": {
        Object update = a.get("update");
        boolean one = op.equals("updateOne");
        UpdateResult r = update instanceof List<?>
            ? (one ? coll.updateOne(doc(a, "filter"), docs(update), updateOptions(a)) : coll.updateMany(doc(a, "filter"), docs(update), updateOptions(a)))
            : (one ? coll.updateOne(doc(a, "filter"), (Bson) update, updateOptions(a)) : coll.updateMany(doc(a, "filter"), (Bson) update, updateOptions(a)));
        return updateCounts(r);
      }
      case "replaceOne":
        return updateCounts(coll.replaceOne(doc(a, "filter"), doc(a, "replacement"), new ReplaceOptions().upsert(flag(a, "upsert"))));
      case "deleteOne": return new Document("deletedCount", coll.deleteOne(doc(a, "filter")).getDeletedCount());
      case "deleteMany": return new Document("deletedCount", coll.deleteMany(doc(a, "filter")).getDeletedCount());
      case "findOneAndUpdate": {
        FindOneAndUpdateOptions options = new FindOneAndUpdateOptions().upsert(flag(a, "upsert"))
            .returnDocument("after".equals(a.getString("returnDocument")) ? ReturnDocument.AFTER : ReturnDocument.BEFORE);
        if (a.containsKey("projection")) options.projection(doc(a, "projection"));
        if (a.containsKey("sort")) options.sort(doc(a, "sort"));
        return coll.findOneAndUpdate(doc(a, "filter"), doc(a, "update"), options);
      }
      case "findOneAndReplace": {
        FindOneAndReplaceOptions options = new FindOneAndReplaceOptions().upsert(flag(a, "upsert"))
            .returnDocument("after".equals(a.getString("returnDocument")) ? ReturnDocument.AFTER : ReturnDocument.BEFORE);
        return coll.findOneAndReplace(doc(a, "filter"), doc(a, "replacement"), options);
      }
      case "findOneAndDelete": return coll.findOneAndDelete(doc(a, "filter"), new FindOneAndDeleteOptions());
      case "bulkWrite": {
        List<WriteModel<Document>> models = new ArrayList<>();
        for (Object request : a.getList("requests", Object.class)) models.add(writeModel((Document) request));
        boolean ordered = !a.containsKey("ordered") || a.getBoolean("ordered");
        BulkWriteResult r = coll.bulkWrite(models, new BulkWriteOptions().ordered(ordered));
        List<BsonValue> upserted = new ArrayList<>();
        for (BulkWriteUpsert u : r.getUpserts()) upserted.add(u.getId());
        return new Document("insertedCount", r.getInsertedCount()).append("matchedCount", r.getMatchedCount())
            .append("modifiedCount", r.getModifiedCount()).append("deletedCount", r.getDeletedCount())
            .append("upsertedCount", r.getUpserts().size()).append("upsertedIds", upserted);
      }
      case "createIndex": {
        Document options = doc(a, "options");
        IndexOptions index = new IndexOptions();
        if (options.containsKey("unique")) index.unique(options.getBoolean("unique"));
        if (options.containsKey("name")) index.name(options.getString("name"));
        return coll.createIndex(doc(a, "keys"), index);
      }
      case "listIndexes": {
        List<Document> indexes = new ArrayList<>();
        for (Document index : coll.listIndexes()) {
          indexes.add(new Document("key", index.get("key")).append("name", index.getString("name"))
              .append("unique", Boolean.TRUE.equals(index.getBoolean("unique"))));
        }
        indexes.sort(Comparator.comparing(index -> index.getString("name")));
        return indexes;
      }
      case "listCollections": {
        List<String> names = db.listCollectionNames().into(new ArrayList<>());
        names.sort(Comparator.naturalOrder());
        return names;
      }
      case "runCommand": {
        MongoDatabase target = a.containsKey("db") ? client.getDatabase(a.getString("db")) : db;
        return target.runCommand(doc(a, "command"));
      }
      default:
        throw new IllegalArgumentException("scenario: unknown op " + op);
    }
  }
}
