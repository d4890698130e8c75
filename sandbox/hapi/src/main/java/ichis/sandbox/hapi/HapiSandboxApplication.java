package ichis.sandbox.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.RuntimeResourceDefinition;
import ca.uhn.fhir.context.RuntimeSearchParam;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.api.RestSearchParameterTypeEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import jakarta.persistence.EntityManagerFactory;
import jakarta.servlet.Filter;
import jakarta.servlet.http.HttpServletResponse;
import jakarta.servlet.http.HttpServletResponseWrapper;
import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import javax.sql.DataSource;
import org.hl7.fhir.r4.model.IdType;
import org.springframework.beans.BeansException;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.data.jpa.JpaRepositoriesAutoConfiguration;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.flyway.FlywayAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * A minimal HAPI FHIR JPA server (R4) on an H2 file database, for ichis development and tests.
 *
 * <p>FHIR base: {@code http://HOST:PORT/fhir}. Settings come from {@code application.yaml}
 * ({@code sandbox.*}, {@code server.port}, ...) and can be overridden on the command line, e.g.
 * {@code --server.port=8090 --sandbox.data-dir=/tmp/hapi}.
 */
@SpringBootApplication(
		exclude = {
			FlywayAutoConfiguration.class,
			HibernateJpaAutoConfiguration.class,
			JpaRepositoriesAutoConfiguration.class,
			QuartzAutoConfiguration.class,
			ElasticsearchRestClientAutoConfiguration.class,
			ThymeleafAutoConfiguration.class
		})
@Import({
	JpaR4Config.class,
	HapiJpaConfig.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	ThreadPoolFactoryConfig.class,
	SubscriptionChannelConfig.class // in-memory message channels, used by batch2 (no subscriptions)
})
public class HapiSandboxApplication {

	/** Extension whose Identifier value is indexed by the added {@code AuditEvent?identifier=} parameter. */
	public static final String AUDIT_EVENT_IDENTIFIER_EXTENSION =
			"http://ichis.local/fhir/StructureDefinition/auditevent-identifier";

	public static void main(String[] args) {
		SpringApplication.run(HapiSandboxApplication.class, args);
	}

	@Bean
	public JpaStorageSettings storageSettings(
			@Value("${sandbox.max-page-size}") int maxPageSize,
			@Value("${sandbox.bulk-export-file-max-resources}") int bulkExportFileMaxResources) {
		JpaStorageSettings s = new JpaStorageSettings();
		// Ids: clients may PUT any id (also numeric ones); server-assigned ids are UUIDs.
		s.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
		s.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
		// Tests write then search at once: never answer a search from an earlier cached one.
		s.setReuseCachedSearchResultsForMillis(null);
		s.setFetchSizeDefaultMaximum(maxPageSize);
		// Test resets: DELETE with _expunge, multiple delete, $expunge.
		s.setAllowMultipleDelete(true);
		s.setExpungeEnabled(true);
		s.setDeleteExpungeEnabled(true);
		// Bulk export: a fresh job per kick-off, and batch2 steps trigger maintenance at once.
		s.setEnableBulkExportJobReuse(false);
		s.setJobFastTrackingEnabled(true);
		s.setBulkExportFileMaximumCapacity(bulkExportFileMaxResources);
		// Audit records reference users, orders and patients that may live on another server (the
		// EHR's), as an audit repository must accept; reads still resolve what exists.
		s.setEnforceReferentialIntegrityOnWrite(false);
		// Nothing we do not need.
		s.setMarkResourcesForReindexingUponSearchParameterChange(false);
		s.setEnableTaskPreExpandValueSets(false);
		s.setPreExpandValueSets(false);
		s.setEnableTaskResourceReindexing(false);
		s.setHibernateSearchIndexSearchParams(false);
		return s;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings(); // no channel types: subscriptions are off
	}

	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			DataSource dataSource,
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			@Value("${sandbox.schema-update}") String schemaUpdate) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Properties p = new Properties();
		p.put("hibernate.dialect", "ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect");
		p.put("hibernate.hbm2ddl.auto", schemaUpdate);
		p.put("hibernate.search.enabled", "false");
		p.put("hibernate.format_sql", "false");
		p.put("hibernate.show_sql", "false");
		p.put("hibernate.jdbc.batch_size", "20");
		p.put("hibernate.cache.use_query_cache", "false");
		p.put("hibernate.cache.use_second_level_cache", "false");
		emf.setJpaProperties(p);
		return emf;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		return new JpaTransactionManager(entityManagerFactory);
	}

	/** No narratives on write: keeps stored resources as sent and writes cheap. */
	@Bean
	public NullNarrativeGenerator narrativeGenerator() {
		return new NullNarrativeGenerator();
	}

	/**
	 * R4 AuditEvent has no {@code identifier} element and no such search parameter; add one as a
	 * built-in (it lives in the FhirContext, so {@code $expunge} cannot remove it) so that
	 * {@code If-None-Exist: identifier=system|value} works. It indexes both the extension
	 * {@link #AUDIT_EVENT_IDENTIFIER_EXTENSION} (valueIdentifier) and {@code entity.what.identifier}.
	 * Also runs the batch2 job maintenance (which advances bulk export jobs) every few seconds
	 * instead of every minute.
	 */
	@Bean
	public static BeanPostProcessor sandboxTweaks(
			@Value("${sandbox.batch2-maintenance-ms}") long batch2MaintenanceMillis) {
		return new BeanPostProcessor() {
			@Override
			public Object postProcessAfterInitialization(Object bean, String beanName) throws BeansException {
				if (bean instanceof FhirContext ctx) {
					addSearchParam(ctx.getResourceDefinition("AuditEvent"), new RuntimeSearchParam(
							new IdType("SearchParameter/AuditEvent-identifier"),
							"http://ichis.local/fhir/SearchParameter/AuditEvent-identifier",
							"identifier",
							"Business identifier of the audit event (ichis sandbox addition)",
							"AuditEvent.extension('" + AUDIT_EVENT_IDENTIFIER_EXTENSION
									+ "').value.ofType(Identifier) | AuditEvent.entity.what.identifier",
							RestSearchParameterTypeEnum.TOKEN,
							Set.of(),
							Set.of(),
							RuntimeSearchParam.RuntimeSearchParamStatusEnum.ACTIVE,
							List.of("AuditEvent")));
				}
				if (bean instanceof JobMaintenanceServiceImpl svc) {
					svc.setScheduledJobFrequencyMillis(batch2MaintenanceMillis);
				}
				return bean;
			}
		};
	}

	/**
	 * Adds a search parameter to a resource definition as if it were built in. The definition is
	 * sealed (read-only) once scanned, so its two private collections are replaced by reflection
	 * (HAPI 8.8.0's RuntimeResourceDefinition: myNameToSearchParam, mySearchParams).
	 */
	@SuppressWarnings("unchecked")
	static void addSearchParam(RuntimeResourceDefinition def, RuntimeSearchParam sp) {
		try {
			Field byNameField = RuntimeResourceDefinition.class.getDeclaredField("myNameToSearchParam");
			Field listField = RuntimeResourceDefinition.class.getDeclaredField("mySearchParams");
			byNameField.setAccessible(true);
			listField.setAccessible(true);
			Map<String, RuntimeSearchParam> byName =
					new LinkedHashMap<>((Map<String, RuntimeSearchParam>) byNameField.get(def));
			byName.put(sp.getName(), sp);
			List<RuntimeSearchParam> list = new ArrayList<>(byName.values());
			list.sort(Comparator.comparing(RuntimeSearchParam::getName));
			byNameField.set(def, Collections.unmodifiableMap(byName));
			listField.set(def, Collections.unmodifiableList(list));
		} catch (ReflectiveOperationException e) {
			throw new IllegalStateException("Cannot add search parameter " + sp.getName(), e);
		}
	}

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			ResourceProviderFactory resourceProviderFactory,
			JpaSystemProvider<?, ?> systemProvider,
			BulkDataExportProvider bulkDataExportProvider,
			DatabaseBackedPagingProvider pagingProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			@Value("${sandbox.default-page-size}") int defaultPageSize,
			@Value("${sandbox.max-page-size}") int maxPageSize) {
		RestfulServer server = new RestfulServer(systemDao.getContext());
		server.registerProviders(resourceProviderFactory.createProviders());
		server.registerProvider(systemProvider);
		server.registerProvider(bulkDataExportProvider);
		pagingProvider.setDefaultPageSize(defaultPageSize);
		pagingProvider.setMaximumPageSize(maxPageSize);
		server.setPagingProvider(pagingProvider);
		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("ichis sandbox HAPI FHIR R4 server");
		server.setServerConformanceProvider(capabilities);
		return server;
	}

	/**
	 * HAPI answers every {@code $export-poll-status} 202 with a hard-coded {@code Retry-After: 120};
	 * a client that honours it would wait two minutes per poll. Answer with a configurable value.
	 */
	@Bean
	public FilterRegistrationBean<Filter> retryAfterFilter(@Value("${sandbox.export-retry-after-seconds}") int seconds) {
		Filter filter = (request, response, chain) -> chain.doFilter(
				request, new HttpServletResponseWrapper((HttpServletResponse) response) {
					@Override
					public void setHeader(String name, String value) {
						super.setHeader(name, fix(name, value));
					}

					@Override
					public void addHeader(String name, String value) {
						super.addHeader(name, fix(name, value));
					}

					private String fix(String name, String value) {
						return "Retry-After".equalsIgnoreCase(name) ? Integer.toString(seconds) : value;
					}
				});
		FilterRegistrationBean<Filter> reg = new FilterRegistrationBean<>(filter);
		reg.addUrlPatterns("/fhir/*");
		return reg;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer restfulServer) {
		ServletRegistrationBean<RestfulServer> reg = new ServletRegistrationBean<>(restfulServer, "/fhir/*");
		reg.setLoadOnStartup(1);
		return reg;
	}
}
