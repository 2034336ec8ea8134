// A V2 (Open Inference Protocol) REST client in plain Java 17: no dependencies.
// Run: java Client.java http://127.0.0.1:8080 MODEL 0.1 0.2 0.3 0.4
// Prints one line per call: "<what> <status> <body>".
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

public class Client {
    static final HttpClient HTTP = HttpClient.newBuilder()
            .connectTimeout(Duration.ofSeconds(10)).build();

    static HttpResponse<String> get(String url) throws Exception {
        HttpRequest request = HttpRequest.newBuilder(URI.create(url))
                .timeout(Duration.ofSeconds(30)).GET().build();
        return HTTP.send(request, HttpResponse.BodyHandlers.ofString());
    }

    static HttpResponse<String> post(String url, String json) throws Exception {
        HttpRequest request = HttpRequest.newBuilder(URI.create(url))
                .timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(json)).build();
        return HTTP.send(request, HttpResponse.BodyHandlers.ofString());
    }

    static void print(String what, HttpResponse<String> response) {
        System.out.println(what + " " + response.statusCode() + " " + response.body());
    }

    public static void main(String[] args) throws Exception {
        String base = args[0];
        String model = args[1];
        List<String> values = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            values.add(Double.toString(Double.parseDouble(args[i])));
        }
        print("ready", get(base + "/v2/health/ready"));
        print("metadata", get(base + "/v2/models/" + model));
        String body = "{\"id\": \"java-1\", \"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", "
                + "\"shape\": [1, " + values.size() + "], \"data\": [" + String.join(", ", values)
                + "]}]}";
        print("infer", post(base + "/v2/models/" + model + "/infer", body));
        print("bad", post(base + "/v2/models/" + model + "/infer", "{\"inputs\": 5}"));
    }
}
