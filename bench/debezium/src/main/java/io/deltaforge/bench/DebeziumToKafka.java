package io.deltaforge.bench;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.debezium.embedded.EmbeddedWorkerConfig;
import io.debezium.embedded.KafkaConnectUtil;
import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;
import java.io.File;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.connect.storage.Converter;
import org.apache.kafka.connect.storage.FileOffsetBackingStore;
import org.apache.kafka.connect.storage.OffsetStorageWriter;

/**
 * Debezium's embedded engine into Kafka, for bench/: every change event of one connector, its
 * value as JSON without schemas, produced to one topic and keyed by the event's key.
 *
 * <pre>java -cp harness.jar:libs/* io.deltaforge.bench.DebeziumToKafka config.json</pre>
 *
 * <p>The JSON file holds {@code engine} (the engine's and connector's properties), {@code producer}
 * (the KafkaProducer's), {@code topic}, and optionally {@code start}: a source partition and
 * offset written to the engine's offset file before it starts, which is how a connector without
 * a slot (MySQL/MariaDB) is told where to start reading.
 *
 * <p>Each batch the engine hands over is sent, then every record's acknowledgement is awaited
 * before the batch is marked finished (as Debezium Server's Kafka sink does): offsets never pass
 * what Kafka holds. SIGTERM closes the engine (it commits its offsets), then the producer; the
 * exit status is 0 when both closed cleanly. The engine stopping on its own is a failure (1).
 */
public final class DebeziumToKafka {
  private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(60);

  private DebeziumToKafka() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: DebeziumToKafka <config.json>");
      System.exit(2);
    }
    JsonNode config = new ObjectMapper().readTree(new File(args[0]));
    Properties engineProperties = properties(config.required("engine"));
    if (config.has("start")) {
      writeStartOffset(engineProperties, config.get("start"));
    }
    KafkaProducer<String, String> producer =
        new KafkaProducer<>(
            properties(config.required("producer")), new StringSerializer(), new StringSerializer());
    String topic = config.required("topic").asText();

    CountDownLatch stopped = new CountDownLatch(1);
    AtomicReference<String> outcome = new AtomicReference<>();
    DebeziumEngine<ChangeEvent<String, String>> engine =
        DebeziumEngine.create(Json.class)
            .using(engineProperties)
            .notifying((records, committer) -> sendBatch(producer, topic, records, committer))
            .using(
                (success, message, error) -> {
                  outcome.set((success ? "" : "failed: ") + message);
                  if (error != null) {
                    error.printStackTrace();
                  }
                  stopped.countDown();
                })
            .build();
    AtomicBoolean closing = new AtomicBoolean();
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  closing.set(true);
                  Runtime.getRuntime().halt(close(engine, producer, stopped) ? 0 : 1);
                }));
    ExecutorService executor = Executors.newSingleThreadExecutor();
    executor.execute(engine);
    stopped.await();
    if (!closing.get()) {
      System.err.println("the Debezium engine stopped by itself: " + outcome.get());
      Runtime.getRuntime().halt(1);
    }
  }

  /** Send a batch, wait until Kafka acknowledged all of it, then let the engine commit it. */
  private static void sendBatch(
      KafkaProducer<String, String> producer,
      String topic,
      List<ChangeEvent<String, String>> records,
      DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
      throws InterruptedException {
    CountDownLatch acknowledged = new CountDownLatch(records.size());
    AtomicReference<Exception> failure = new AtomicReference<>();
    for (ChangeEvent<String, String> record : records) {
      producer.send(
          new ProducerRecord<>(topic, record.key(), record.value()),
          (metadata, error) -> {
            if (error != null) {
              failure.compareAndSet(null, error);
            }
            acknowledged.countDown();
          });
      committer.markProcessed(record);
    }
    acknowledged.await();
    if (failure.get() != null) {
      throw new IllegalStateException("Kafka did not take a record", failure.get());
    }
    committer.markBatchFinished();
  }

  private static boolean close(
      DebeziumEngine<ChangeEvent<String, String>> engine,
      KafkaProducer<String, String> producer,
      CountDownLatch stopped) {
    boolean clean = true;
    try {
      engine.close();
      clean = stopped.await(CLOSE_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
    } catch (Exception error) {
      error.printStackTrace();
      clean = false;
    }
    producer.close(CLOSE_TIMEOUT);
    System.err.println("closed " + (clean ? "cleanly" : "with errors"));
    return clean;
  }

  /**
   * Store {@code start.offset} for {@code start.partition} in the engine's offset file, through
   * the same store, writer and converter the engine reads it back with.
   */
  private static void writeStartOffset(Properties engineProperties, JsonNode start)
      throws Exception {
    ObjectMapper mapper = new ObjectMapper();
    TypeReference<Map<String, Object>> map = new TypeReference<>() {};
    Map<String, Object> partition = mapper.convertValue(start.required("partition"), map);
    Map<String, Object> offset = mapper.convertValue(start.required("offset"), map);
    Map<String, String> settings = new HashMap<>();
    engineProperties.stringPropertyNames()
        .forEach(name -> settings.put(name, engineProperties.getProperty(name)));
    FileOffsetBackingStore store = KafkaConnectUtil.fileOffsetBackingStore();
    store.configure(new EmbeddedWorkerConfig(settings));
    store.start();
    try {
      Converter converter = KafkaConnectUtil.converterForOffsetStore();
      OffsetStorageWriter writer =
          new OffsetStorageWriter(store, engineProperties.getProperty("name"), converter, converter);
      writer.offset(partition, offset);
      writer.beginFlush();
      writer.doFlush((error, ignored) -> {}).get(CLOSE_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
    } finally {
      store.stop();
    }
  }

  private static Properties properties(JsonNode object) {
    Properties properties = new Properties();
    object.fields().forEachRemaining(field -> properties.setProperty(field.getKey(), field.getValue().asText()));
    return properties;
  }
}
