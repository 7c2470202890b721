package io.deltaforge.bench;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.sql.Driver;
import java.sql.DriverPropertyInfo;
import java.sql.SQLException;
import java.sql.SQLFeatureNotSupportedException;
import java.sql.Statement;
import java.util.Properties;
import java.util.logging.Logger;

/**
 * The JDBC driver Debezium's MySQL connector is given for a MariaDB server ({@code
 * database.jdbc.driver}): MySQL's Connector/J with one statement translated.
 *
 * <p>Debezium 3 reads MariaDB with its MariaDB connector, which the registry this project uses
 * does not serve. Its MySQL connector reads MariaDB's binlog as it is (the same binlog client and
 * streaming code, from debezium-connector-binlog), but asks for the binlog position with MySQL
 * 8.4's {@code SHOW BINARY LOG STATUS}, since it takes MariaDB's version (10.x) for a MySQL newer
 * than 8.4. MariaDB calls that statement {@code SHOW MASTER STATUS}: this driver sends that
 * instead. Everything else passes through unchanged. (Debezium strips Connector/J's own query
 * interceptors from its configuration, hence a driver.)
 */
public final class MariaDbDriver implements Driver {
  private static final String MYSQL_STATEMENT = "SHOW BINARY LOG STATUS";
  private static final String MARIADB_STATEMENT = "SHOW MASTER STATUS";

  private final Driver mysql;

  public MariaDbDriver() throws SQLException {
    mysql = new com.mysql.cj.jdbc.Driver();
  }

  @Override
  public Connection connect(String url, Properties info) throws SQLException {
    Connection connection = mysql.connect(url, info);
    return connection == null ? null : translating(Connection.class, connection);
  }

  /** {@code target} behind a proxy that translates the statement in any call that takes SQL. */
  private static <T> T translating(Class<T> type, T target) {
    Object proxy =
        Proxy.newProxyInstance(
            type.getClassLoader(),
            new Class<?>[] {type},
            (self, method, args) -> {
              Object[] arguments = args;
              if (args != null
                  && args.length > 0
                  && args[0] instanceof String sql
                  && sql.trim().equalsIgnoreCase(MYSQL_STATEMENT)) {
                arguments = args.clone();
                arguments[0] = MARIADB_STATEMENT;
              }
              Object result;
              try {
                result = method.invoke(target, arguments);
              } catch (InvocationTargetException error) {
                throw error.getCause();
              }
              return method.getReturnType() == Statement.class
                  ? translating(Statement.class, (Statement) result)
                  : result;
            });
    return type.cast(proxy);
  }

  @Override
  public boolean acceptsURL(String url) throws SQLException {
    return mysql.acceptsURL(url);
  }

  @Override
  public DriverPropertyInfo[] getPropertyInfo(String url, Properties info) throws SQLException {
    return mysql.getPropertyInfo(url, info);
  }

  @Override
  public int getMajorVersion() {
    return mysql.getMajorVersion();
  }

  @Override
  public int getMinorVersion() {
    return mysql.getMinorVersion();
  }

  @Override
  public boolean jdbcCompliant() {
    return mysql.jdbcCompliant();
  }

  @Override
  public Logger getParentLogger() throws SQLFeatureNotSupportedException {
    return mysql.getParentLogger();
  }
}
